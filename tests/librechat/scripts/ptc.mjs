// One call of LibreChat's programmatic tool-calling tool, as LibreChat's ToolNode makes it:
// createProgrammaticToolCallingTool(...) (or createBashProgrammaticToolCallingTool with
// payload.bash) .invoke(toolCall, config), with toolMap and toolDefs on the tool call. That
// tool is the lowest exported function that makes the HTTP calls: its makeRequest POSTs
// /exec/programmatic, loops over tool_call_required rounds (executeTools runs the tools
// below), and POSTs /exec/programmatic/cancel when config.signal aborts.
// Payload: { baseUrl, apiKey, args: {code, timeout?}, session_id?, bash?: bool,
//            abortAfterMs?: number, params?: extra create...Tool params }
// Prints { ok, content, artifact } or { ok: false, error }, and the tool calls it ran.
import { createBashProgrammaticToolCallingTool, createProgrammaticToolCallingTool,
         tool } from "@librechat/agents";
import { readPayload, authHeaders, print, messageJson } from "./common.mjs";

const payload = await readPayload();
const calls = [];
const numbers = {
  type: "object",
  properties: { a: { type: "number" }, b: { type: "number" } },
  required: ["a", "b"],
};
const implementations = {
  add: async ({ a, b }) => a + b,
  mul: async ({ a, b }) => a * b,
  fail: async () => { throw new Error("the tool broke"); },
};
const toolDefs = [
  { name: "add", description: "Add two numbers", parameters: numbers },
  { name: "mul", description: "Multiply two numbers", parameters: numbers },
  { name: "fail", description: "Always fails", parameters: { type: "object", properties: {} } },
];
const toolMap = new Map(toolDefs.map((def) => [def.name, tool(async (input) => {
  calls.push({ name: def.name, input });
  return implementations[def.name](input);
}, { name: def.name, description: def.description, schema: def.parameters })]));

const params = { baseUrl: payload.baseUrl, authHeaders: authHeaders(payload),
                 ...(payload.params ?? {}) };
const ptc = payload.bash ? createBashProgrammaticToolCallingTool(params)
                         : createProgrammaticToolCallingTool(params);
const toolCall = { id: "call_1", name: ptc.name, type: "tool_call", args: payload.args,
                   toolMap, toolDefs };
if (payload.session_id) toolCall.session_id = payload.session_id;
const controller = new AbortController();
if (payload.abortAfterMs != null) setTimeout(() => controller.abort(), payload.abortAfterMs);
try {
  const message = await ptc.invoke(toolCall, { signal: controller.signal });
  print({ ok: true, calls, ...messageJson(message) });
} catch (error) {
  print({ ok: false, calls, error: String(error?.message ?? error) });
}
