// tuneloop web app: keyboard shortcuts for the answering and adjudication pages.
// Plain script, no dependencies; the pages work without it (forms post as usual).
(function () {
  "use strict";

  function typing(el) {
    if (!el) return false;
    if (el.isContentEditable || el.tagName === "TEXTAREA" || el.tagName === "SELECT") return true;
    return el.tagName === "INPUT" && !["radio", "checkbox", "button", "submit"].includes(el.type);
  }

  function submit(id) {
    var form = document.getElementById(id);
    if (!form) return false;
    if (form.requestSubmit) form.requestSubmit(); else form.submit();
    return true;
  }

  // ranking: rank inputs hold the order; keys and dragging fill them
  function rankInputs() {
    return Array.prototype.slice.call(document.querySelectorAll("#ranking-list input.rank"));
  }

  function syncListOrder() {
    var list = document.getElementById("ranking-list");
    if (!list) return;
    var items = Array.prototype.slice.call(list.children);
    var ranked = items.filter(function (li) { return li.querySelector("input.rank").value; });
    if (ranked.length !== items.length) return; // keep the order until all are ranked
    items.sort(function (a, b) {
      return Number(a.querySelector("input.rank").value) - Number(b.querySelector("input.rank").value);
    });
    items.forEach(function (li) { list.appendChild(li); });
  }

  function rankByKey(number) {
    var inputs = rankInputs();
    var index = number - 1;
    if (index < 0 || index >= inputs.length) return false;
    var target = document.querySelector('#ranking-list li[data-index="' + index + '"] input.rank');
    if (target.value) return true; // ranked already
    var used = inputs.filter(function (i) { return i.value; }).length;
    target.value = String(used + 1);
    var left = inputs.filter(function (i) { return !i.value; });
    if (left.length === 1) left[0].value = String(inputs.length);
    syncListOrder();
    return true;
  }

  function unrankLast() {
    var inputs = rankInputs();
    var top = 0, last = null;
    inputs.forEach(function (i) {
      var v = Number(i.value || 0);
      if (v > top) { top = v; last = i; }
    });
    if (last) last.value = "";
    return last !== null;
  }

  function setupDragging() {
    var list = document.getElementById("ranking-list");
    if (!list) return;
    var dragged = null;
    list.addEventListener("dragstart", function (ev) {
      dragged = ev.target.closest("li");
      if (dragged) dragged.classList.add("dragging");
    });
    list.addEventListener("dragend", function () {
      if (dragged) dragged.classList.remove("dragging");
      dragged = null;
      Array.prototype.slice.call(list.children).forEach(function (li, i) {
        li.querySelector("input.rank").value = String(i + 1);
      });
    });
    list.addEventListener("dragover", function (ev) {
      ev.preventDefault();
      var over = ev.target.closest("li");
      if (!dragged || !over || over === dragged) return;
      var box = over.getBoundingClientRect();
      var after = ev.clientY > box.top + box.height / 2;
      list.insertBefore(dragged, after ? over.nextSibling : over);
    });
  }

  function toggleHelp() {
    var help = document.getElementById("help");
    if (!help) return;
    if (help.open) help.close(); else help.showModal();
  }

  document.addEventListener("DOMContentLoaded", function () {
    setupDragging();
    var button = document.getElementById("help-button");
    if (button) button.addEventListener("click", toggleHelp);
  });

  document.addEventListener("keydown", function (ev) {
    var form = document.getElementById("answer-form");
    if (ev.defaultPrevented) return;
    var active = document.activeElement;
    if (form && ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      submit("answer-form");
      return;
    }
    if (ev.key === "Escape" && typing(active)) {
      active.blur();
      return;
    }
    if (typing(active) || ev.altKey || ev.metaKey) return;
    if (ev.ctrlKey) {
      if (ev.key === "z" && submit("undo-form")) ev.preventDefault();
      return;
    }
    var key = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
    var question = form ? form.dataset.question : "";
    if (question === "ranking") {
      if (/^[1-9]$/.test(key) && rankByKey(Number(key))) { ev.preventDefault(); return; }
      if (key === "Backspace" && unrankLast()) { ev.preventDefault(); return; }
    } else if (form && key.length === 1) {
      var input = form.querySelector('input[data-key="' + key.replace(/["\\]/g, "") + '"]');
      if (input) {
        ev.preventDefault();
        if (input.type === "checkbox") input.checked = !input.checked; else input.checked = true;
        return;
      }
    }
    if (key === "Enter") {
      if (!form || (active && (active.tagName === "BUTTON" || active.tagName === "A"))) return;
      ev.preventDefault();
      submit("answer-form");
    } else if (key === "s") {
      if (submit("skip-form")) ev.preventDefault();
    } else if (key === "u") {
      if (submit("undo-form")) ev.preventDefault();
    } else if (key === "e") {
      var box = form ? form.querySelector("textarea") : null;
      if (box) { ev.preventDefault(); box.focus(); }
    } else if (key === "g") {
      var guide = document.getElementById("guidelines");
      if (guide) { ev.preventDefault(); guide.open = !guide.open; }
    } else if (key === "?") {
      ev.preventDefault();
      toggleHelp();
    }
  });
})();
