// Shared by the scripts: read the JSON payload from stdin, print one JSON result.
export async function readPayload() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

export function authHeaders(payload) {
  return payload.apiKey ? { "X-API-Key": payload.apiKey } : {};
}

// Print the result and end the process soon after: the client's HTTP agents keep idle
// connections open (the server keeps them for 120 s), which would hold Node alive. The
// grace lets requests the client fires and forgets (the cancel after an abort) go out.
export function print(result) {
  process.stdout.write(JSON.stringify(result) + "\n");
  setTimeout(() => process.exit(0), 1500);
}

// A LangChain ToolMessage (content + artifact) as plain JSON.
export function messageJson(message) {
  return { content: message.content, artifact: message.artifact ?? null,
           status: message.status ?? null };
}
