// The model card's forms: post the pasted rows to /invocations and show what comes back.
// Everything is written with textContent: nothing from a response or the page becomes markup.
//
// On a server started with a token, a browser without it gets the page that asks for it
// (<body data-token="required">). The token is kept in this tab's sessionStorage only, sent as
// the Authorization header (never in a URL) to fetch the card and to predict; a 401 clears it
// and says so.
"use strict";

const TOKEN_KEY = "modelsafe.token";
let tokenInMemory = null;  // where sessionStorage is not available (the tab's life only, as sessionStorage)

function storedToken() {
  try {
    return window.sessionStorage.getItem(TOKEN_KEY);
  } catch (error) {
    return tokenInMemory;
  }
}

function keepToken(token) {
  tokenInMemory = token;
  try {
    window.sessionStorage.setItem(TOKEN_KEY, token);
  } catch (error) {
    // storage refused (private mode, policy): the token lives in this page only
  }
}

function forgetToken() {
  tokenInMemory = null;
  try {
    window.sessionStorage.removeItem(TOKEN_KEY);
  } catch (error) {
    // nothing was stored
  }
}

function withToken(headers) {
  const token = storedToken();
  return token ? {...headers, "Authorization": "Bearer " + token} : headers;
}

function show(form, selector, text) {
  form.querySelector(selector).textContent = text;
}

function tokenForm() {
  return document.querySelector("form.token");
}

// Show the token field again (after a 401), with the message; false on a page without one.
function askForToken(message) {
  const form = tokenForm();
  if (!form) {
    return false;
  }
  form.elements.token.closest("label").hidden = false;
  form.querySelector("button[type=submit]").hidden = false;
  form.querySelector("button.forget").hidden = true;
  form.elements.token.value = "";
  show(form, ".error", message);
  form.elements.token.focus();
  return true;
}

const REFUSED = "The server refused the token (HTTP 401): it is not the one the server was started with " +
  "(--token-file). Enter that token.";

// Fetch the card with the token and put its models in this page.
async function unlock() {
  const form = tokenForm();
  show(form, ".error", "");
  let response;
  try {
    response = await fetch("/", {headers: withToken({"Accept": "text/html"}), cache: "no-store",
                                 credentials: "omit"});
  } catch (error) {
    show(form, ".error", "The server could not be reached: " + String(error));
    return;
  }
  if (response.status === 401) {
    forgetToken();
    askForToken(REFUSED);
    return;
  }
  if (!response.ok) {
    show(form, ".error", "The page could not be loaded (HTTP " + response.status + ").");
    return;
  }
  const page = new DOMParser().parseFromString(await response.text(), "text/html");
  const main = page.querySelector("main"), about = page.querySelector("header p.about");
  if (!main || page.body.dataset.token === "required") {
    show(form, ".error", "The server sent no model card: reload the page.");
    return;
  }
  for (const script of main.querySelectorAll("script")) {  // the server sends none there; never run one
    script.remove();
  }
  document.querySelector("main").replaceWith(document.adoptNode(main));
  if (about) {
    document.querySelector("header p.about").replaceWith(document.adoptNode(about));
  }
  document.title = page.title;
  document.body.dataset.token = "given";
  form.elements.token.value = "";
  form.elements.token.closest("label").hidden = true;
  form.querySelector("button[type=submit]").hidden = true;
  form.querySelector("button.forget").hidden = false;
  setUpForms();
}

async function predict(form) {
  const format = form.elements.format.value;
  const method = form.elements.method.value;
  const list = form.querySelector(".warnings");
  show(form, ".error", "");
  show(form, ".result", "…");
  list.replaceChildren();
  const url = "/invocations?model=" + encodeURIComponent(form.dataset.model) +
    (method === "predict" ? "" : "&method=" + encodeURIComponent(method));
  try {
    const response = await fetch(url, {
      method: "POST",
      headers: withToken({"Content-Type": format}),
      body: form.elements.payload.value,
      credentials: "omit",
    });
    const data = await response.json();
    if (!response.ok) {
      show(form, ".result", "");
      let message = data.error.type + " (HTTP " + response.status + "): " + data.error.message;
      if (response.status === 401) {
        forgetToken();
        message = askForToken(REFUSED) ? REFUSED + " The field is at the top of the page." : message;
      }
      show(form, ".error", message);
      return;
    }
    show(form, ".result", JSON.stringify(data.predictions, null, 1));
    for (const warning of data.warnings || []) {
      const item = document.createElement("li");
      item.textContent = warning;
      list.appendChild(item);
    }
  } catch (error) {
    show(form, ".result", "");
    show(form, ".error", String(error));
  }
}

function setUpForms() {
  for (const form of document.querySelectorAll("form.try")) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      predict(form);
    });
    form.elements.format.addEventListener("change", () => {
      const payload = form.elements.payload;
      const json = form.dataset.exampleJson, csv = form.dataset.exampleCsv;
      if (form.elements.format.value === "text/csv" && (payload.value === json || payload.value === "")) {
        payload.value = csv;
      } else if (form.elements.format.value !== "text/csv" && (payload.value === csv || payload.value === "")) {
        payload.value = json;
      }
    });
  }
}

function setUpToken() {
  const form = tokenForm();
  if (!form) {
    return;
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = form.elements.token.value.trim();
    if (!token) {
      show(form, ".error", "Enter the token the server was started with (--token-file).");
      return;
    }
    keepToken(token);
    unlock();
  });
  form.querySelector("button.forget").addEventListener("click", () => {
    forgetToken();
    window.location.reload();
  });
  if (storedToken()) {
    unlock();  // this tab was given the token before (a reload)
  } else {
    form.elements.token.focus();
  }
}

setUpForms();
setUpToken();
