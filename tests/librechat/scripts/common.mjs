// Shared by the scripts: read the JSON payload from stdin, print one JSON result.
export async function readPayload() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

export function authHeaders(payload) {
  return payload.apiKey ? { "X-API-Key": payload.apiKey } : {};
}

export function print(result) {
  process.stdout.write(JSON.stringify(result) + "\n");
}

// A LangChain ToolMessage (content + artifact) as plain JSON.
export function messageJson(message) {
  return { content: message.content, artifact: message.artifact ?? null,
           status: message.status ?? null };
}
