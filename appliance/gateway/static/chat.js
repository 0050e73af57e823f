/* The branch's web chat: asks over the box's WebSocket (/v1/ws), streams each answer token by
 * token with its sources, and re-reads a conversation's history over HTTP after a reload.
 * Nothing from the internet (boxes are often offline), no inline script, and every text from
 * the box or the user is set as textContent, never as markup.
 *
 * Sign-in: a chat token (pasted, or ?access_token=, removed from the address bar at once) or
 * an enrolment code (a one-time "enroll" token, traded for a chat token by POST /v1/enroll).
 * The token lives in sessionStorage (gone with the tab). The box has no API listing a user's
 * conversations, so the list is kept in localStorage, per user. */
"use strict";

(() => {
  const FETCH_TIMEOUT_MS = 15000;
  const RECONNECT_MAX_MS = 30000;
  const HISTORY_PAGE = 1000; // the API's largest page
  const TOKEN_KEY = "appliance.chat.token";
  const LANG_KEY = "appliance.chat.lang";

  const STRINGS = {
    en: {
      title: "Branch assistant", loading: "Loading…", signInTitle: "Sign in",
      tokenLabel: "Chat token", signIn: "Sign in", enrollLabel: "Enrolment code",
      enroll: "Enrol", enrollNote: "A one-time code from the branch's administrator.",
      signOut: "Sign out", newConversation: "New conversation", conversations: "Conversations",
      listNote: "This list is kept in this browser only: the box does not list conversations.",
      placeholder: "Type a question…", send: "Send", you: "You", assistant: "Assistant",
      sources: "Sources", chunk: "part", waiting: "Waiting for the answer…",
      untitled: "New conversation", empty: "Ask anything to start.",
      signedInAs: "Signed in as {0}", authOff: "No sign-in needed on this box",
      connecting: "connecting…", connected: "connected", offline: "offline, retrying in {0} s",
      signInRefused: "Sign-in refused: {0}", enrollRefused: "Enrolment refused: {0}",
      sessionEnded: "Your session ended: {0}", unreachable: "Cannot reach the box: {0}",
      historyFailed: "Cannot read this conversation: {0}", notConnected:
        "Not connected to the box yet; try again in a moment.",
      err_draining: "The box is being serviced and takes no new questions right now. " +
        "Try again in a few minutes.",
      err_rate_limited: "Too many questions at once. Wait a moment, then send again.",
      err_forbidden: "Refused: this conversation belongs to someone else.",
      err_invalid_message: "The box did not accept this message.",
      err_refused: "The box refused this message.",
      err_failed: "No answer could be given.",
    },
    zh: {
      title: "网点助手", loading: "正在加载…", signInTitle: "登录",
      tokenLabel: "聊天令牌", signIn: "登录", enrollLabel: "注册码",
      enroll: "注册", enrollNote: "由网点管理员提供的一次性注册码。",
      signOut: "退出登录", newConversation: "新对话", conversations: "对话",
      listNote: "此列表只保存在本浏览器中：本机不提供对话列表。",
      placeholder: "请输入问题…", send: "发送", you: "您", assistant: "助手",
      sources: "来源", chunk: "片段", waiting: "正在等待回答…",
      untitled: "新对话", empty: "输入问题即可开始。",
      signedInAs: "已登录：{0}", authOff: "本机无需登录",
      connecting: "正在连接…", connected: "已连接", offline: "已断开，{0} 秒后重试",
      signInRefused: "登录被拒绝：{0}", enrollRefused: "注册被拒绝：{0}",
      sessionEnded: "会话已结束：{0}", unreachable: "无法连接本机：{0}",
      historyFailed: "无法读取此对话：{0}", notConnected: "尚未连接到本机，请稍后再试。",
      err_draining: "本机正在维护，暂不接受新问题，请几分钟后再试。",
      err_rate_limited: "请求过多，请稍候再发送。",
      err_forbidden: "已拒绝：此对话属于其他用户。",
      err_invalid_message: "本机未接受此消息。",
      err_refused: "本机拒绝了此消息。",
      err_failed: "无法给出回答。",
    },
  };
  const RATE_LIMITED = new Set(["rate_limited", "ratelimited", "engine_overloaded",
                                "too_many_requests", "queue_full"]);

  const $ = (id) => document.getElementById(id);
  let lang = pickLanguage();
  let token = null;        // the chat token; null with authentication off
  let user = "";           // the token's subject, for the conversation list's key
  let socket = null;
  let socketOpen = false;
  let retries = 0;
  let reconnectTimer = null;
  let current = null;      // {id, known, lastSeq}
  let status = null;       // [key, ...args] of the connection line, re-drawn on a toggle

  // -- strings ------------------------------------------------------------------------------
  function pickLanguage() {
    const saved = localStorage.getItem(LANG_KEY);
    if (saved && STRINGS[saved]) return saved;
    return (navigator.language || "en").toLowerCase().startsWith("zh") ? "zh" : "en";
  }

  function t(key, ...args) {
    const text = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
    return text.replace(/\{(\d)\}/g, (_, i) => String(args[Number(i)] ?? ""));
  }

  function applyLanguage() {
    document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
    document.title = t("title");
    for (const node of document.querySelectorAll("[data-i18n]")) {
      node.textContent = t(node.dataset.i18n);
    }
    for (const node of document.querySelectorAll("[data-i18n-placeholder]")) {
      node.placeholder = t(node.dataset.i18nPlaceholder);
    }
    $("lang").textContent = lang === "zh" ? "English" : "中文";
    $("lang").lang = lang === "zh" ? "en" : "zh-CN";
    showWho();
    if (status) setConnection(...status);
    renderConversations();
  }

  /** An element with attributes and text (textContent: never markup). */
  function el(name, attributes = {}, text = null) {
    const node = document.createElement(name);
    for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
    if (text !== null) node.textContent = text;
    return node;
  }

  /** A translated span that follows the language toggle. */
  const label = (key, attributes = {}) => el("span", { ...attributes, "data-i18n": key }, t(key));

  // -- the box's HTTP API --------------------------------------------------------------------
  function apiError(status, body, fallback) {
    const detail = (body && body.error) || {};
    const error = new Error(detail.message || fallback || `HTTP ${status}`);
    error.status = status;
    error.code = detail.code || "";
    return error;
  }

  async function api(path, { method = "GET", bearer = token } = {}) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), FETCH_TIMEOUT_MS);
    try {
      const headers = bearer ? { Authorization: "Bearer " + bearer } : {};
      const response = await fetch(path, { method, headers, signal: controller.signal,
                                           cache: "no-store", credentials: "omit" });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) throw apiError(response.status, body, response.statusText);
      return body;
    } catch (error) {
      if (error.name === "AbortError") {
        throw new Error(`no answer in ${FETCH_TIMEOUT_MS / 1000} s`);
      }
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  // -- signing in ---------------------------------------------------------------------------
  /** ?access_token= from the address bar, removed from it and from the history at once. */
  function takeUrlToken() {
    const url = new URL(window.location.href);
    const value = url.searchParams.get("access_token");
    if (value !== null) {
      url.searchParams.delete("access_token");
      window.history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
    return value;
  }

  /** The token's subject, read (not verified: the box does that) for the local list. */
  function subjectOf(value) {
    try {
      const part = value.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const claims = JSON.parse(atob(part + "=".repeat((4 - part.length % 4) % 4)));
      return typeof claims.sub === "string" && claims.sub ? claims.sub : "token";
    } catch (_) {
      return "token";
    }
  }

  function showSignIn(message = "") {
    closeSocket();
    $("loading").hidden = true;
    $("chat").hidden = true;
    $("sign-out").hidden = true;
    $("sign-in").hidden = false;
    const notice = $("sign-in-error");
    notice.textContent = message;
    notice.hidden = !message;
    setConnection(null);
    showWho();
  }

  /** Check a token with a chat-scoped call; the box's own refusal is shown if it fails. */
  async function signIn(candidate, refusedKey = "signInRefused") {
    try {
      await api("v1/models", { bearer: candidate });
    } catch (error) {
      if (error.status === 401 || error.status === 403) {
        sessionStorage.removeItem(TOKEN_KEY);
        token = null;
        showSignIn(t(refusedKey, error.message));
      } else {
        showSignIn(t("unreachable", error.message));
      }
      return false;
    }
    token = candidate;
    user = candidate ? subjectOf(candidate) : "anonymous";
    if (candidate) sessionStorage.setItem(TOKEN_KEY, candidate);
    startChat();
    return true;
  }

  async function enroll(code) {
    let answer;
    try {
      answer = await api("v1/enroll", { method: "POST", bearer: code });
    } catch (error) {
      showSignIn(t("enrollRefused", error.message));
      return;
    }
    await signIn(answer.token);
  }

  function signOut(message = "") {
    sessionStorage.removeItem(TOKEN_KEY);
    token = null;
    user = "";
    current = null;
    $("messages").replaceChildren();
    showSignIn(message);
  }

  function showWho() {
    const who = $("who");
    if (!user || $("chat").hidden) who.textContent = "";
    else who.textContent = token ? t("signedInAs", user) : t("authOff");
  }

  // -- the conversation list (this browser's) -----------------------------------------------
  const listKey = () => `appliance.chat.conversations.${user}`;
  const currentKey = () => `appliance.chat.current.${user}`;

  function conversations() {
    try {
      const list = JSON.parse(localStorage.getItem(listKey()) || "[]");
      return Array.isArray(list) ? list.filter((c) => c && typeof c.id === "string") : [];
    } catch (_) {
      return [];
    }
  }

  function saveConversations(list) {
    localStorage.setItem(listKey(), JSON.stringify(list.slice(0, 200)));
  }

  function remember(id, changes) {
    const list = conversations();
    const index = list.findIndex((c) => c.id === id);
    const entry = { id, title: "", lastSeq: 0, updated: Date.now(),
                    ...(index >= 0 ? list[index] : {}), ...changes };
    if (index >= 0) list.splice(index, 1);
    list.unshift(entry);
    saveConversations(list);
    renderConversations();
  }

  function randomId(prefix) {
    const bytes = new Uint8Array(6);
    crypto.getRandomValues(bytes);
    const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
    return `${prefix}-${Date.now().toString(36)}-${hex}`;
  }

  function renderConversations() {
    const list = $("conversations");
    if (!user) return;
    list.replaceChildren();
    for (const entry of conversations()) {
      const item = el("li", { "data-id": entry.id });
      const button = el("button", { type: "button", class: "plain conversation" },
                        entry.title || t("untitled"));
      if (current && current.id === entry.id) button.setAttribute("aria-current", "true");
      button.addEventListener("click", () => { openConversation(entry.id); });
      item.appendChild(button);
      list.appendChild(item);
    }
  }

  function newConversation() {
    const id = randomId("web");
    remember(id, { title: "" });
    openConversation(id);
    $("question").focus();
  }

  // -- the thread ---------------------------------------------------------------------------
  /** The turn (question and answer) of message ``id``, made if it is not on the page yet. */
  function turn(id, question = null) {
    let node = document.querySelector(`#messages li.turn[data-id="${CSS.escape(id)}"]`);
    if (!node) {
      node = el("li", { class: "turn", "data-id": id });
      const asked = el("div", { class: "msg user" });
      asked.appendChild(label("you", { class: "who" }));
      asked.appendChild(el("p", { class: "text" }, question ?? ""));
      const answer = el("div", { class: "msg bot", "data-state": "waiting", "data-tokens": "0" });
      answer.appendChild(label("assistant", { class: "who" }));
      answer.appendChild(label("waiting", { class: "pending" }));
      answer.appendChild(el("p", { class: "text" }));
      answer.appendChild(el("p", { class: "error", role: "alert" }));
      const sources = el("div", { class: "sources", hidden: "" });
      sources.appendChild(label("sources", { class: "sources-label" }));
      sources.appendChild(el("ul"));
      answer.appendChild(sources);
      node.appendChild(asked);
      node.appendChild(answer);
      $("messages").appendChild(node);
      $("empty")?.remove();
    } else if (question !== null) {
      node.querySelector(".msg.user .text").textContent = question;
    }
    return node;
  }

  const answerOf = (node) => node.querySelector(".msg.bot");

  function scrollDown() {
    const list = $("messages");
    list.lastElementChild?.scrollIntoView({ block: "end" });
  }

  function showSources(node, sources) {
    const box = answerOf(node).querySelector(".sources");
    const list = box.querySelector("ul");
    list.replaceChildren();
    for (const source of sources || []) {
      const item = el("li", { class: "source", "data-document": source.document });
      item.appendChild(el("span", { class: "source-name" }, source.name || source.document));
      if (Number.isInteger(source.chunk)) {
        item.appendChild(document.createTextNode(" · "));
        item.appendChild(label("chunk", { class: "source-chunk-label" }));
        item.appendChild(el("span", { class: "source-chunk" }, ` ${source.chunk + 1}`));
      }
      list.appendChild(item);
    }
    box.hidden = !list.children.length;
  }

  function answered(node, text, sources) {
    const answer = answerOf(node);
    answer.querySelector(".text").textContent = text ?? "";
    answer.querySelector(".error").textContent = "";
    answer.setAttribute("data-state", "done");
    showSources(node, sources);
  }

  /** A refusal or failure in plain words, with the box's own message beside it. */
  function explain(code, message) {
    let key = "err_refused";
    if (code === "draining") key = "err_draining";
    else if (RATE_LIMITED.has(code)) key = "err_rate_limited";
    else if (code === "forbidden" || code === "forbidden_sender") key = "err_forbidden";
    else if (code === "invalid_message" || code === "invalid_json") key = "err_invalid_message";
    else if (code === "failed") key = "err_failed";
    return message ? `${t(key)} (${message})` : t(key);
  }

  function failed(node, state, code, message) {
    const answer = answerOf(node);
    answer.setAttribute("data-state", state);
    answer.setAttribute("data-code", code || "");
    answer.querySelector(".error").textContent = explain(code, message);
  }

  function notice(text) {
    $("notice").textContent = text;
    $("notice").hidden = !text;
  }

  function seen(seq) {
    if (!current || !Number.isInteger(seq) || seq <= current.lastSeq) return;
    current.lastSeq = seq;
    remember(current.id, { lastSeq: seq });
  }

  function showEmpty() {
    if (!$("messages").children.length) {
      $("messages").appendChild(el("li", { id: "empty", class: "empty", "data-i18n": "empty" },
                                   t("empty")));
    }
  }

  /** Show a conversation: its history from the box, then the socket resumes after it. */
  async function openConversation(id) {
    current = { id, known: false, lastSeq: 0 };
    localStorage.setItem(currentKey(), id);
    $("messages").replaceChildren();
    $("messages").setAttribute("data-conversation", id);
    $("messages").removeAttribute("data-loaded");
    notice("");
    renderConversations();
    const opened = current;
    try {
      let after = 0;
      for (;;) {
        const page = await api(`v1/conversations/${encodeURIComponent(id)}/messages` +
                               `?after_seq=${after}&limit=${HISTORY_PAGE}`);
        if (current !== opened) return;
        for (const record of page.messages) showRecord(record);
        opened.known = true;
        if (page.messages.length < HISTORY_PAGE) break;
        after = page.messages[page.messages.length - 1].seq;
      }
    } catch (error) {
      if (current !== opened) return;
      if (error.status === 401) {
        signOut(t("sessionEnded", error.message));
        return;
      }
      if (error.code !== "conversation_not_found") {
        notice(t("historyFailed", error.message));
      }
    }
    showEmpty();
    $("messages").setAttribute("data-loaded", "true");
    scrollDown();
    resume();
  }

  function showRecord(record) {
    const node = turn(record.id, record.text);
    node.setAttribute("data-seq", record.seq);
    const failedRecord = record.state === "failed" || (record.error && record.reply === null);
    if (failedRecord) {
      const [code, ...rest] = String(record.error || "failed: ").split(": ");
      failed(node, "failed", code, rest.join(": "));
      seen(record.seq);
    } else if (record.reply !== null && record.reply !== undefined) {
      answered(node, record.reply, record.sources);
      seen(record.seq);
    }
    // else: not answered yet; the socket's resume brings the answer
    const entry = conversations().find((c) => c.id === record.conversation);
    if (entry && !entry.title) remember(entry.id, { title: record.text.slice(0, 60) });
  }

  // -- the WebSocket ------------------------------------------------------------------------
  function setConnection(key, ...args) {
    status = key ? [key, ...args] : null;
    const line = $("connection");
    line.textContent = key ? t(key, ...args) : "";
    line.setAttribute("data-state", key || "off");
    $("send").disabled = key !== "connected";
  }

  function closeSocket() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    if (socket) {
      const old = socket;
      socket = null;
      socketOpen = false;
      old.close();
    }
  }

  function connect() {
    closeSocket();
    const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    const query = token ? `?access_token=${encodeURIComponent(token)}` : "";
    const ws = new WebSocket(`${scheme}//${window.location.host}/v1/ws${query}`);
    socket = ws;
    setConnection("connecting");
    ws.addEventListener("open", () => {
      if (socket !== ws) return;
      socketOpen = true;
      retries = 0;
      setConnection("connected");
      resume();
    });
    ws.addEventListener("message", (event) => {
      if (socket !== ws) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      onFrame(frame);
    });
    ws.addEventListener("close", (event) => {
      if (socket !== ws) return;
      const wasOpen = socketOpen;
      socket = null;
      socketOpen = false;
      onClosed(event, wasOpen);
    });
  }

  async function onClosed(event, wasOpen) {
    if (event.code === 1008) { // the box closed it: the token expired or was revoked
      signOut(t("sessionEnded", event.reason || "token refused"));
      return;
    }
    if (!wasOpen) { // the handshake was refused (403) or the box is away: ask it why
      try {
        await api("v1/models");
      } catch (error) {
        if (error.status === 401 || error.status === 403) {
          signOut(t("sessionEnded", error.message));
          return;
        }
      }
    }
    const delay = Math.min(1000 * 2 ** retries, RECONNECT_MAX_MS);
    retries += 1;
    setConnection("offline", Math.round(delay / 1000));
    reconnectTimer = setTimeout(connect, delay);
  }

  function send(frame) {
    if (!socket || !socketOpen) return false;
    socket.send(JSON.stringify(frame));
    return true;
  }

  function resume() {
    if (current && current.known) {
      send({ type: "resume", conversation: current.id, last_seq: current.lastSeq });
    }
  }

  /** This app is linked to others (/link): the box put the question in the person's one
   * conversation. Show that one from now on (its history holds the question). */
  function movedTo(id) {
    remember(id, {});
    openConversation(id);
  }

  function onFrame(frame) {
    const known = frame.id
      ? document.querySelector(`#messages li.turn[data-id="${CSS.escape(frame.id)}"]`) : null;
    if (current && known && frame.type === "ack" && frame.conversation &&
        frame.conversation !== current.id) {
      movedTo(frame.conversation);
      return;
    }
    if (!current || (frame.conversation && frame.conversation !== current.id)) return;
    if (frame.type === "ack") {
      if (!known) return;
      known.setAttribute("data-seq", frame.seq);
      current.known = true;
    } else if (frame.type === "token") {
      // While the history loads, a new turn would land above the older ones: its reply (or
      // the history) brings the text.
      if ($("messages").dataset.loaded !== "true") return;
      const node = known || turn(frame.id);
      const answer = answerOf(node);
      if (answer.dataset.state === "done") return;
      answer.setAttribute("data-state", "streaming");
      answer.setAttribute("data-tokens", Number(answer.dataset.tokens || 0) + 1);
      answer.querySelector(".text").textContent += frame.text;
      scrollDown();
    } else if (frame.type === "reply") {
      if (!known) { // asked elsewhere (another tab): the history has the question
        openConversation(current.id);
        return;
      }
      answered(known, frame.text, frame.sources);
      seen(frame.seq);
      scrollDown();
    } else if (frame.type === "error") {
      if (known) {
        const hasSeq = Number.isInteger(frame.seq);
        failed(known, hasSeq ? "failed" : "refused", frame.code, frame.message);
        if (hasSeq) seen(frame.seq);
      } else if (frame.code !== "unknown_conversation") {
        notice(explain(frame.code, frame.message));
      }
    }
  }

  function ask(event) {
    event.preventDefault();
    const input = $("question");
    const text = input.value.trim();
    if (!text) return;
    if (!current) newConversation();
    const id = randomId("m");
    if (!send({ type: "message", id, conversation: current.id, text })) {
      notice(t("notConnected"));
      return;
    }
    notice("");
    turn(id, text);
    const entry = conversations().find((c) => c.id === current.id);
    remember(current.id, entry && entry.title ? {} : { title: text.slice(0, 60) });
    input.value = "";
    scrollDown();
  }

  // -- start --------------------------------------------------------------------------------
  function startChat() {
    $("loading").hidden = true;
    $("sign-in").hidden = true;
    $("sign-in-error").hidden = true;
    $("chat").hidden = false;
    $("sign-out").hidden = !token;
    showWho();
    renderConversations();
    const saved = localStorage.getItem(currentKey());
    const list = conversations();
    if (saved && list.some((c) => c.id === saved)) openConversation(saved);
    else if (list.length) openConversation(list[0].id);
    else newConversation();
    connect();
  }

  async function start() {
    applyLanguage();
    const fromUrl = takeUrlToken();
    const stored = fromUrl || sessionStorage.getItem(TOKEN_KEY);
    if (stored) {
      await signIn(stored);
      return;
    }
    try { // no token: is authentication off on this box?
      await api("v1/models", { bearer: null });
    } catch (error) {
      showSignIn(error.status === 401 ? "" : t("unreachable", error.message));
      return;
    }
    await signIn(null);
  }

  $("lang").addEventListener("click", () => {
    lang = lang === "zh" ? "en" : "zh";
    localStorage.setItem(LANG_KEY, lang);
    applyLanguage();
  });
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    $("token-input").value = "";
    if (value) signIn(value);
  });
  $("enroll-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("enroll-input").value.trim();
    $("enroll-input").value = "";
    if (value) enroll(value);
  });
  $("sign-out").addEventListener("click", () => { signOut(); });
  $("new-conversation").addEventListener("click", newConversation);
  $("composer").addEventListener("submit", ask);
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  start();
})();
