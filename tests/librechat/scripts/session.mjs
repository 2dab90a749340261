// Several calls of LibreChat's code tool in one conversation. Each answer's artifact
// updates the code session the way ToolNode's (unexported) updateCodeSession does, and
// the next call carries it as ToolNode does: `session_id` and `_injected_files` built
// like its (unexported) toInjectedFileRef. The lowest exported entry point is
// createCodeExecutionTool(...).invoke(toolCall).
// Payload: { baseUrl, apiKey, calls: [{lang, code}], files?: initial injected refs }
import { createCodeExecutionTool } from "@librechat/agents";
import { readPayload, authHeaders, print, messageJson } from "./common.mjs";

function toInjectedFileRef(file, execSessionId) {  // as ToolNode.mjs
  const base = { id: file.id, resource_id: file.resource_id ?? file.id, name: file.name,
                 storage_session_id: file.storage_session_id ?? execSessionId };
  const kind = file.kind ?? "user";
  if (kind === "skill" && file.version != null) return { ...base, kind, version: file.version };
  return { ...base, kind: kind === "agent" ? "agent" : "user" };
}

const payload = await readPayload();
const tool = createCodeExecutionTool({ baseUrl: payload.baseUrl,
                                       authHeaders: authHeaders(payload) });
let session = { session_id: undefined, files: payload.files ?? [] };
const results = [];
for (const [index, args] of payload.calls.entries()) {
  const toolCall = { id: `call_${index}`, name: tool.name, type: "tool_call", args };
  if (session.session_id) toolCall.session_id = session.session_id;
  if (session.files.length > 0)
    toolCall._injected_files = session.files.map((f) => toInjectedFileRef(f, session.session_id));
  try {
    const message = await tool.invoke(toolCall);
    const artifact = message.artifact ?? {};
    // updateCodeSession: new files (not inherited echoes) replace same-named ones
    const incoming = (artifact.files ?? []).filter((f) => f.inherited !== true).map(
      (f) => ({ ...f, storage_session_id: f.storage_session_id ?? artifact.session_id }));
    const names = new Set(incoming.map((f) => f.name));
    session = { session_id: artifact.session_id ?? session.session_id,
                files: [...session.files.filter((f) => !names.has(f.name)), ...incoming] };
    results.push({ ok: true, ...messageJson(message) });
  } catch (error) {
    results.push({ ok: false, error: String(error?.message ?? error) });
  }
}
print({ results, session });
