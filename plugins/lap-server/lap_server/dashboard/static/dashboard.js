// LAP dashboard: live session statuses and the chat view. Everything from the server is set as
// text (textContent), never as HTML: agent output stays text whatever it contains.
"use strict";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// Posts a form with fetch (its CSRF field included); resolves to an error text or null.
async function postForm(form) {
  const response = await fetch(form.action, {
    method: "POST",
    body: new URLSearchParams(new FormData(form)),
    credentials: "same-origin",
    redirect: "manual",
  });
  if (response.type === "opaqueredirect" || response.ok) return null;
  const page = new DOMParser().parseFromString(await response.text(), "text/html");
  const message = page.querySelector(".error");
  return message ? message.textContent : "request failed (" + response.status + ")";
}

function liveSessions(list) {
  const source = new EventSource(list.dataset.live);
  source.addEventListener("session", (message) => {
    const session = JSON.parse(message.data);
    const row = list.querySelector('[data-session-id="' + CSS.escape(session.id) + '"]');
    if (!row) return;
    const status = row.querySelector(".status");
    status.textContent = session.status;
    status.className = "status status-" + session.status;
    status.title = session.detail;
  });
}

const EVENT_TYPES = [
  "user_message", "text_delta", "reasoning_delta", "tool_call", "tool_result", "usage", "status",
  "error", "egress_denied", "turn_end", "harness_session",
];

function chat(log) {
  const status = document.getElementById("session-status");
  const errorLine = document.getElementById("chat-error");
  const sendForm = document.getElementById("send");
  const abortForm = document.getElementById("abort");
  const tools = new Map();
  let reply = null; // the assistant's current text block
  let turn = null; // the current turn's container

  function currentTurn() {
    if (!turn) {
      turn = el("div", "turn");
      log.appendChild(turn);
    }
    return turn;
  }
  function add(node) {
    currentTurn().appendChild(node);
    reply = null;
    node.scrollIntoView({ block: "end" });
  }
  function setBusy(busy) {
    status.textContent = busy ? "running" : "ready";
    status.className = "status status-" + status.textContent;
  }
  const handlers = {
    user_message(event) {
      turn = null;
      add(el("div", "msg user", event.text));
      setBusy(true);
    },
    text_delta(event) {
      if (!reply) {
        reply = el("div", "msg agent");
        currentTurn().appendChild(reply);
      }
      reply.textContent += event.text;
      reply.scrollIntoView({ block: "end" });
    },
    reasoning_delta(event) {
      const last = currentTurn().lastElementChild;
      if (last && last.classList.contains("reasoning")) {
        last.querySelector("pre").textContent += event.text;
        return;
      }
      const box = el("details", "step reasoning");
      box.appendChild(el("summary", "", "thinking"));
      box.appendChild(el("pre", "", event.text));
      add(box);
    },
    tool_call(event) {
      const box = el("details", "step tool");
      box.appendChild(el("summary", "", "tool: " + event.name));
      box.appendChild(el("pre", "tool-input", JSON.stringify(event.input, null, 2)));
      tools.set(event.call_id, box);
      add(box);
    },
    tool_result(event) {
      let box = tools.get(event.call_id);
      if (!box) {
        box = el("details", "step tool");
        box.appendChild(el("summary", "", "tool result"));
        add(box);
      }
      box.appendChild(el("pre", event.is_error ? "tool-output error" : "tool-output", event.output));
      if (event.is_error) box.classList.add("failed");
    },
    usage(event) {
      let text = "tokens: " + event.input_tokens + " in, " + event.output_tokens + " out";
      if (event.cost !== null && event.cost !== undefined) text += ", $" + event.cost.toFixed(4);
      add(el("div", "note usage", text));
    },
    status(event) {
      add(el("div", "note", event.phase + (event.detail ? ": " + event.detail : "")));
    },
    error(event) {
      add(el("div", "note error", event.code + ": " + event.message));
    },
    egress_denied(event) {
      add(el("div", "note error", "egress denied: " + event.host + ":" + event.port + " (" + event.reason + ")"));
    },
    turn_end(event) {
      if (event.status !== "completed") {
        add(el("div", "note error", "turn " + event.status + (event.reason ? ": " + event.reason : "")));
      }
      turn = null;
      reply = null;
      setBusy(false);
    },
    harness_session() {},
  };

  // A dropped connection reconnects on its own, sending Last-Event-ID: the stream resumes after
  // the last event shown. A reload replays the log from the start, then goes on live.
  const source = new EventSource(log.dataset.events);
  for (const type of EVENT_TYPES) {
    source.addEventListener(type, (message) => handlers[type](JSON.parse(message.data).event));
  }

  function showError(text) {
    errorLine.textContent = text || "";
    errorLine.hidden = !text;
  }
  sendForm.addEventListener("submit", async (submit) => {
    submit.preventDefault();
    const error = await postForm(sendForm);
    showError(error);
    if (!error) sendForm.querySelector("textarea").value = "";
  });
  sendForm.querySelector("textarea").addEventListener("keydown", (key) => {
    if (key.key === "Enter" && (key.ctrlKey || key.metaKey)) sendForm.requestSubmit();
  });
  abortForm.addEventListener("submit", async (submit) => {
    submit.preventDefault();
    showError(await postForm(abortForm));
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const list = document.getElementById("sessions");
  if (list && list.dataset.live) liveSessions(list);
  const log = document.getElementById("chat");
  if (log) chat(log);
});
