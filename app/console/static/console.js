/* K8sInterpreter console: edit, run with live output, files, sessions.
 *
 * Runs go to POST /exec/stream (Server-Sent Events read from fetch's body);
 * uploads to POST /upload into the current session; produced files are fetched
 * from /download with the key and shown inline (images, CSV) or offered as
 * downloads. "Stop" closes the stream, which stops the program on the server.
 */
"use strict";

(() => {
  const { api, apiJson, readEvents, el, formatBytes } = K8SI;
  const $ = (id) => document.getElementById(id);

  const SAMPLES = {
    py: 'import matplotlib.pyplot as plt\n\nplt.plot([1, 4, 9, 16])\nplt.title("squares")\n' +
        'plt.savefig("plot.png")\nprint("saved plot.png")\n',
    js: 'console.log("hello from node", process.version);\n',
    ts: 'const greet = (name: string): string => `hello ${name}`;\nconsole.log(greet("ts"));\n',
    bash: 'for i in 1 2 3; do echo "line $i"; sleep 0.5; done\n',
    c: '#include <stdio.h>\n\nint main(void) {\n    puts("hello from C");\n    return 0;\n}\n',
    cpp: '#include <iostream>\n\nint main() {\n    std::cout << "hello from C++\\n";\n}\n',
    java: 'public class Main {\n    public static void main(String[] args) {\n' +
          '        System.out.println("hello from Java");\n    }\n}\n',
    go: 'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("hello from Go")\n}\n',
    rs: 'fn main() {\n    println!("hello from Rust");\n}\n',
    php: '<?php\necho "hello from PHP\\n";\n',
    r: 'cat("hello from R\\n")\n',
    d: 'import std.stdio;\n\nvoid main() {\n    writeln("hello from D");\n}\n',
    f90: 'program hello\n  print *, "hello from Fortran"\nend program hello\n',
  };
  const ALL_LANGUAGES = Object.keys(SAMPLES);

  let sessionId = null;
  let controller = null; // AbortController of the run in progress
  const edited = new Set(); // languages whose sample the user changed

  // -- languages -------------------------------------------------------------------

  function fillLanguages(available) {
    const select = $("lang");
    const current = select.value || "py";
    select.replaceChildren();
    for (const code of ALL_LANGUAGES) {
      const version = available ? available[code] : undefined;
      if (available && version === undefined) continue;
      select.append(el("option", { value: code, text: version ? `${code} (${version})` : code }));
    }
    select.value = [...select.options].some((o) => o.value === current) ? current : "py";
  }

  async function loadLanguages() {
    try {
      const ready = await apiJson("/health/ready");
      fillLanguages(ready.services.languages.available);
    } catch (_) {
      fillLanguages(null); // no key yet, or not ready: offer every language
    }
  }

  function loadSample() {
    const lang = $("lang").value;
    if (!edited.has(lang)) $("code").value = SAMPLES[lang] || "";
  }

  // -- output ----------------------------------------------------------------------

  function setStatus(text, kind) {
    const status = $("status");
    status.textContent = text;
    status.className = `status ${kind}`;
  }

  function appendOutput(stream, text) {
    const output = $("output");
    const last = output.lastElementChild;
    if (last && last.dataset.stream === stream) last.append(text);
    else output.append(el("span", { class: `out-${stream}`, "data-stream": stream }, text));
    output.scrollTop = output.scrollHeight;
  }

  function showResult(result, elapsed) {
    const kind = result.status === "ok" ? "ok" : "failed";
    setStatus(result.status, kind);
    const parts = [`exit ${result.code ?? result.signal ?? "-"}`,
      `${result.wall_time.toFixed(3)} s`, `${formatBytes(result.memory)} peak`,
      `${result.language} ${result.version || ""}`.trim(), `total ${elapsed} ms`];
    if (result.message) parts.unshift(result.message);
    if (result.has_state) parts.push(`state ${formatBytes(result.state_size)}`);
    $("summary").textContent = parts.join(" · ");
    for (const issue of result.state_errors || []) {
      appendOutput("stderr", `\n[state] ${issue.name}: ${issue.error}\n`);
    }
    showProduced(result.files || [], result.skipped_files || []);
  }

  // -- produced files --------------------------------------------------------------

  const isImage = (f) => /^image\//.test(f.content_type || "") ||
    /\.(png|jpe?g|gif|webp|svg)$/i.test(f.name);
  const isCsv = (f) => /csv/.test(f.content_type || "") || /\.csv$/i.test(f.name);
  const downloadPath = (f) =>
    `/download/${encodeURIComponent(f.storage_session_id || f.session_id)}/${encodeURIComponent(f.id)}`;

  async function fileBlob(file) {
    return (await api(downloadPath(file))).blob();
  }

  function downloadLink(file) {
    const link = el("a", { href: "#", class: "download", text: `${file.name}` });
    link.addEventListener("click", async (event) => {
      event.preventDefault();
      const url = URL.createObjectURL(await fileBlob(file));
      const save = el("a", { href: url, download: file.name.split("/").pop() });
      document.body.append(save);
      save.click();
      save.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    });
    return link;
  }

  function parseCsv(text, maxRows) {
    const rows = [];
    let row = [], field = "", quoted = false;
    for (let i = 0; i < text.length && rows.length < maxRows; i++) {
      const c = text[i];
      if (quoted) {
        if (c === '"' && text[i + 1] === '"') { field += '"'; i++; }
        else if (c === '"') quoted = false;
        else field += c;
      } else if (c === '"') quoted = true;
      else if (c === ",") { row.push(field); field = ""; }
      else if (c === "\n" || c === "\r") {
        if (c === "\r" && text[i + 1] === "\n") i++;
        row.push(field); rows.push(row); row = []; field = "";
      } else field += c;
    }
    if ((field || row.length) && rows.length < maxRows) { row.push(field); rows.push(row); }
    return rows;
  }

  async function csvTable(file) {
    const text = await (await fileBlob(file)).text();
    const rows = parseCsv(text, 201);
    const table = el("table", { class: "csv" });
    rows.forEach((cells, index) => {
      const tr = el("tr");
      for (const cell of cells) tr.append(el(index === 0 ? "th" : "td", { text: cell }));
      table.append(tr);
    });
    return rows.length > 200 ? [table, el("p", { class: "muted", text: "first 200 rows" })]
      : [table];
  }

  async function showProduced(files, skipped) {
    const area = $("files");
    area.replaceChildren();
    for (const file of files) {
      const card = el("figure", { class: "file", "data-name": file.name });
      area.append(card);
      const caption = el("figcaption", {}, downloadLink(file), ` ${formatBytes(file.size)}`);
      try {
        if (isImage(file)) {
          const img = el("img", { alt: file.name });
          img.src = URL.createObjectURL(await fileBlob(file));
          card.append(img);
        } else if (isCsv(file)) {
          card.append(...await csvTable(file));
        }
      } catch (error) {
        card.append(el("p", { class: "error", text: `could not show: ${error.message}` }));
      }
      card.append(caption);
    }
    for (const item of skipped) {
      area.append(el("p", { class: "muted", text: `not stored: ${item.name} (${item.reason})` }));
    }
  }

  // -- session ---------------------------------------------------------------------

  function setSession(id) {
    sessionId = id;
    $("session-id").textContent = id || "new";
    refreshSessionFiles();
  }

  async function refreshSessionFiles() {
    const list = $("session-files");
    list.replaceChildren();
    if (!sessionId) return;
    try {
      const files = await apiJson(`/files/${encodeURIComponent(sessionId)}?detail=normalized`);
      for (const file of files) {
        list.append(el("li", {}, downloadLink({ ...file, storage_session_id: sessionId }),
          ` ${formatBytes(file.size)}`));
      }
    } catch (_) { /* the list is a convenience */ }
  }

  async function upload(files) {
    if (!files.length) return;
    const form = new FormData();
    if (sessionId) form.append("session_id", sessionId);
    for (const file of files) form.append("files", file, file.name);
    $("upload-state").textContent = "uploading…";
    try {
      const reply = await apiJson("/upload", { method: "POST", body: form });
      $("upload-state").textContent = `uploaded ${reply.files.length} file(s)`;
      setSession(reply.session_id);
    } catch (error) {
      $("upload-state").textContent = `upload failed: ${error.message}`;
    }
  }

  // -- running ---------------------------------------------------------------------

  async function run() {
    if (controller) return;
    controller = new AbortController();
    $("run").disabled = true;
    $("stop").disabled = false;
    $("output").replaceChildren();
    $("files").replaceChildren();
    $("summary").textContent = "";
    setStatus("starting", "running");
    const body = { lang: $("lang").value, code: $("code").value };
    const args = $("args").value.trim();
    if (args) body.args = args;
    const timeout = Number($("timeout").value);
    if (timeout > 0) body.timeout = timeout;
    if (sessionId && $("keep-session").checked) body.session_id = sessionId;
    const started = performance.now();
    try {
      const response = await api("/exec/stream", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body), signal: controller.signal,
      });
      setStatus("running", "running");
      let finished = false;
      await readEvents(response, (event, data) => {
        const payload = JSON.parse(data);
        if (event === "stdout" || event === "stderr") appendOutput(event, payload.text);
        else if (event === "result") {
          finished = true;
          showResult(payload, Math.round(performance.now() - started));
          if ($("keep-session").checked) setSession(payload.session_id);
        } else if (event === "error") {
          finished = true;
          setStatus(payload.error, "failed");
          $("summary").textContent = payload.message;
        }
      });
      if (!finished) setStatus("connection lost", "failed");
    } catch (error) {
      if (error.name === "AbortError") setStatus("stopped", "failed");
      else {
        setStatus(error.code || "failed", "failed");
        $("summary").textContent = error.message;
      }
    } finally {
      controller = null;
      $("run").disabled = false;
      $("stop").disabled = true;
    }
  }

  // -- wiring ----------------------------------------------------------------------

  $("lang").addEventListener("change", loadSample);
  $("code").addEventListener("input", () => edited.add($("lang").value));
  $("code").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      run();
    } else if (event.key === "Tab") {
      event.preventDefault();
      const area = event.target;
      const { selectionStart: start, selectionEnd: end } = area;
      area.setRangeText("    ", start, end, "end");
      edited.add($("lang").value);
    }
  });
  $("run").addEventListener("click", run);
  $("stop").addEventListener("click", () => controller && controller.abort());
  $("new-session").addEventListener("click", () => setSession(null));
  $("upload").addEventListener("change", (event) => {
    upload([...event.target.files]);
    event.target.value = "";
  });
  K8SI.bindKeyForm(loadLanguages);

  fillLanguages(null);
  $("lang").value = "py";
  loadSample();
  if (K8SI.apiKey()) loadLanguages();
})();
