/* K8sInterpreter operator page: polls GET /admin/overview and GET /admin/runtime-sessions
   (admin keys only); a runtime session can be ended (DELETE /admin/runtime-sessions/{id}). */
"use strict";

(() => {
  const { apiJson, el } = K8SI;
  const $ = (id) => document.getElementById(id);
  let timer = null;

  const percent = (rate) => `${(rate * 100).toFixed(1)} %`;
  const ms = (value) => (value == null ? "-" : value >= 1000 ? `${(value / 1000).toFixed(2)} s`
    : `${Math.round(value)} ms`);

  function fill(tableId, rows) {
    const body = $(tableId).querySelector("tbody");
    body.replaceChildren(...rows.map((cells) => {
      const tr = el("tr");
      for (const cell of cells) {
        tr.append(cell instanceof Node ? el("td", {}, cell) : el("td", { text: cell }));
      }
      return tr;
    }));
  }

  function badge(status) {
    return el("span", { class: `badge ${status === "ok" ? "ok" : "failed"}`, text: status });
  }

  function render(data) {
    const backend = data.backend;
    $("backend").textContent = `${backend.name}${backend.ok ? "" : " (unhealthy)"}`;
    const pools = Object.entries(data.pools)
      .filter(([, p]) => p.target || p.warm || p.starting || p.claimed);
    fill("pools", pools.map(([code, p]) => [code, p.target, p.warm, p.starting, p.claimed]));
    for (const row of $("pools").querySelectorAll("tbody tr")) {
      row.dataset.lang = row.firstChild.textContent; // the tests find a language's row
      row.children[4].className = Number(row.children[4].textContent) > 0 ? "busy" : "";
    }

    const summary = data.executions.summary;
    $("totals").replaceChildren(
      el("span", {}, el("b", { text: summary.count }), " recent"),
      el("span", {}, el("b", { text: percent(summary.error_rate) }), " not ok"),
      el("span", {}, el("b", { text: percent(summary.service_error_rate) }), " service failures"),
      el("span", {}, "median ", el("b", { text: ms(summary.duration_ms.median) })),
      el("span", {}, "p95 ", el("b", { text: ms(summary.duration_ms.p95) })),
    );
    fill("languages", Object.entries(summary.by_language).map(([code, v]) =>
      [code, v.count, v.errors, percent(v.error_rate), ms(v.mean_ms)]));

    const sessions = data.sessions;
    $("sessions-total").textContent =
      `${sessions.total}${sessions.complete ? "" : "+ (partial count)"}`;
    fill("sessions", Object.entries(sessions.by_tenant).map(([tenant, n]) => [tenant, n]));

    fill("recent", data.executions.recent.map((e) => [
      new Date(e.ts * 1000).toLocaleTimeString(), e.tenant, e.language, badge(e.status),
      ms(e.duration_ms), e.wall_time == null ? "-" : `${e.wall_time.toFixed(3)} s`,
      e.pool_hit == null ? "-" : e.pool_hit ? "warm" : "cold",
      el("code", { text: e.session_id }),
    ]));
  }

  const seconds = (value) => (value >= 3600 ? `${(value / 3600).toFixed(1)} h`
    : value >= 60 ? `${Math.round(value / 60)} min` : `${Math.round(value)} s`);

  function renderRuntime(rows) {
    $("runtime-total").textContent = `${rows.length}`;
    fill("runtime", rows.map((r) => {
      const end = el("button", { type: "button", text: "end" });
      end.addEventListener("click", async () => {
        end.disabled = true;
        await K8SI.api(`/admin/runtime-sessions/${r.runtime_session_id}`, { method: "DELETE" });
        refresh();
      });
      return [r.tenant, r.hint, r.language ?? "-", seconds(r.age_seconds),
        seconds(r.idle_seconds),
        r.workspace_bytes == null ? "-" : K8SI.formatBytes(r.workspace_bytes),
        r.kept ? "yes" : "no", el("code", { text: r.runtime_session_id }), end];
    }));
  }

  async function refresh() {
    if (!K8SI.apiKey()) return;
    try {
      render(await apiJson("/admin/overview?limit=50"));
      renderRuntime(await apiJson("/admin/runtime-sessions"));
      $("state").textContent = "live";
      $("state").className = "status ok";
      $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      $("state").textContent = error.status === 403 ? "not an admin key" : error.message;
      $("state").className = "status failed";
    }
  }

  function schedule() {
    if (timer) clearInterval(timer);
    const every = Number($("interval").value);
    timer = every > 0 ? setInterval(refresh, every) : null;
    refresh();
  }

  $("interval").addEventListener("change", schedule);
  K8SI.bindKeyForm(schedule);
  schedule();
})();
