// The model card's forms: post the pasted rows to /invocations and show what comes back.
// Everything is written with textContent: nothing from a response or the page becomes markup.
"use strict";

function show(form, selector, text) {
  form.querySelector(selector).textContent = text;
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
      headers: {"Content-Type": format},
      body: form.elements.payload.value,
    });
    const data = await response.json();
    if (!response.ok) {
      show(form, ".result", "");
      show(form, ".error", data.error.type + " (HTTP " + response.status + "): " + data.error.message);
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
