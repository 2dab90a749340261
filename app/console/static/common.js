/* K8sInterpreter console: what both pages share.
 *
 * The API key lives in this tab's sessionStorage only. Every call goes to the
 * public API of this origin with the X-API-Key header, like any other client.
 */
"use strict";

const K8SI = (() => {
  const KEY_NAME = "k8si.apiKey";

  function apiKey() {
    return sessionStorage.getItem(KEY_NAME) || "";
  }

  function setApiKey(value) {
    if (value) sessionStorage.setItem(KEY_NAME, value);
    else sessionStorage.removeItem(KEY_NAME);
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || `HTTP ${status}`);
      this.status = status;
      this.code = (body && body.error) || "http_error";
    }
  }

  /** fetch() against the API with the key; JSON errors become ApiError. */
  async function api(path, options = {}) {
    const headers = new Headers(options.headers || {});
    headers.set("X-API-Key", apiKey());
    const response = await fetch(path, { ...options, headers });
    if (!response.ok) {
      let body = null;
      try { body = await response.json(); } catch (_) { /* not JSON */ }
      throw new ApiError(response.status, body);
    }
    return response;
  }

  async function apiJson(path, options = {}) {
    return (await api(path, options)).json();
  }

  /** Read a text/event-stream body, calling onEvent(name, data) per event. */
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    const boundary = /\r\n\r\n|\n\n|\r\r/;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let match;
      while ((match = boundary.exec(buffer)) !== null) {
        const block = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        dispatch(block, onEvent);
      }
    }
  }

  function dispatch(block, onEvent) {
    let name = "message";
    const data = [];
    for (const line of block.split(/\r\n|\r|\n/)) {
      if (!line || line.startsWith(":")) continue; // comments are keep-alives
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
    }
    if (data.length) onEvent(name, data.join("\n"));
  }

  /** Wire the key form of a page's header; calls onChange() when a key is set. */
  function bindKeyForm(onChange) {
    const form = document.getElementById("key-form");
    const input = document.getElementById("api-key");
    const state = document.getElementById("key-state");
    const show = () => { state.textContent = apiKey() ? "key set" : "no key"; };
    input.value = apiKey();
    show();
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      setApiKey(input.value.trim());
      show();
      onChange();
    });
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function formatBytes(n) {
    if (n == null) return "";
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
    return `${(n / 1024 / 1024).toFixed(1)} MiB`;
  }

  return { apiKey, setApiKey, api, apiJson, readEvents, bindKeyForm, el, formatBytes, ApiError };
})();
