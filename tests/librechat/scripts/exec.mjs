// One call of LibreChat's code tool: createCodeExecutionTool(...).invoke(toolCall),
// as LibreChat's ToolNode does, with the session and injected files it would carry.
// With payload.bash, LibreChat's bash tool (createBashExecutionTool, args {command}).
// Payload: { baseUrl, apiKey, args: {lang, code, ...}, session_id?, files?, bash?: bool,
//            params?: extra create...Tool params }
import { createBashExecutionTool, createCodeExecutionTool } from "@librechat/agents";
import { readPayload, authHeaders, print, messageJson } from "./common.mjs";

const payload = await readPayload();
const create = payload.bash ? createBashExecutionTool : createCodeExecutionTool;
const tool = create({ baseUrl: payload.baseUrl, authHeaders: authHeaders(payload),
                      ...(payload.params ?? {}) });
const toolCall = { id: "call_1", name: tool.name, type: "tool_call", args: payload.args };
if (payload.session_id) toolCall.session_id = payload.session_id;
if (payload.files) toolCall._injected_files = payload.files;
try {
  const message = await tool.invoke(toolCall);
  print({ ok: true, ...messageJson(message) });
} catch (error) {
  print({ ok: false, error: String(error?.message ?? error) });
}
