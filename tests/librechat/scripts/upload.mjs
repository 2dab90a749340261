// An upload as LibreChat's server sends it (the package itself has no upload
// function): multipart with the `form-data` package, a nested name given as
// `filepath` (as LibreChat's batch upload does for skill and agent files), then the
// session's files listed by the package's own exported `fetchSessionFiles`, which
// builds the file references the code tool injects.
// Payload: { baseUrl, apiKey, files: [{filename, filepath?, text}], batch?, fields?: {},
//            userId?, scope?: {kind, id, version?} }
import FormData from "form-data";
import fetch from "node-fetch";
import { fetchSessionFiles } from "@librechat/agents";
import { readPayload, authHeaders, print } from "./common.mjs";

const payload = await readPayload();
const form = new FormData();
for (const [key, value] of Object.entries(payload.fields ?? {})) form.append(key, value);
for (const file of payload.files) {
  const options = { filename: file.filename, contentType: "application/octet-stream" };
  if (file.filepath) options.filepath = file.filepath;
  form.append("files", Buffer.from(file.text, "utf8"), options);
}
const route = payload.batch ? "upload/batch" : "upload";
const response = await fetch(`${payload.baseUrl.replace(/\/+$/, "")}/${route}`, {
  method: "POST", body: form,
  headers: { ...form.getHeaders(), ...authHeaders(payload),
             ...(payload.userId ? { "User-Id": payload.userId } : {}) },
});
const uploaded = await response.json();
const sessionId = uploaded.session_id;
// fetchSessionFiles(baseUrl, sessionId, scope?, authHeaders): [] on any failure
const refs = payload.scope
  ? await fetchSessionFiles(payload.baseUrl, sessionId, payload.scope, authHeaders(payload))
  : await fetchSessionFiles(payload.baseUrl, sessionId, undefined, authHeaders(payload));
print({ status: response.status, uploaded, refs });
