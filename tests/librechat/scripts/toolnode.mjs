// Calls of LibreChat's code tool made through the package's real ToolNode, which keeps
// the conversation's code session (its `sessions` map) with its own updateCodeSession:
// it injects the session's files into each call (_injected_files) and applies each
// answer's `files` and `deleted_files` to the session, as LibreChat does.
// Payload: { baseUrl, apiKey, calls: [{lang, code}], session?: {session_id, files} }
// Prints { results: [{ok, content, artifact, status}], sessions: [session after each] }
import { createCodeExecutionTool, ToolNode, AIMessage } from "@librechat/agents";
import { readPayload, authHeaders, print, messageJson } from "./common.mjs";

const payload = await readPayload();
const tool = createCodeExecutionTool({ baseUrl: payload.baseUrl,
                                       authHeaders: authHeaders(payload) });
const sessions = new Map();
if (payload.session)
  sessions.set(tool.name, { ...payload.session, lastUpdated: Date.now() });
const node = new ToolNode({ tools: [tool], sessions });
const results = [];
const snapshots = [];
for (const [index, args] of payload.calls.entries()) {
  const call = { id: `call_${index}`, name: tool.name, args, type: "tool_call" };
  const output = await node.invoke({ messages: [new AIMessage({ content: "",
                                                                tool_calls: [call] })] },
                                   { configurable: { thread_id: "conversation-1" } });
  const messages = Array.isArray(output) ? output : output.messages;
  results.push(messageJson(messages[messages.length - 1]));
  const session = sessions.get(tool.name) ?? null;
  snapshots.push(session && { session_id: session.session_id, files: session.files });
}
print({ results, sessions: snapshots });
