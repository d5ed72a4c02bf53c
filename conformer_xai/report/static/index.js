/* conformer-xai report: the index table. Every row loads at once (data/index.js), so sorting
 * and filtering see all images; only the rendering is paged. */
(function () {
  "use strict";
  var data = window.CX_INDEX, table = document.getElementById("images");
  if (!data || !table) { return; }
  var columns = data.columns, rows = data.rows;
  var pos = {};
  var c = 0;
  columns.forEach(function (col) { if (col.type !== "thumb") { pos[col.key] = c++; } });
  var el = {
    query: document.getElementById("query"), agree: document.getElementById("agree-filter"),
    correct: document.getElementById("correct-filter"),
    size: document.getElementById("page-size"), info: document.getElementById("page-info"),
    prev: document.getElementById("prev-page"), next: document.getElementById("next-page"),
    body: table.tBodies[0]
  };
  var state = {sort: null, dir: 1, page: 0, shown: rows};
  var collator = new Intl.Collator(undefined, {numeric: true});
  var textKeys = columns.filter(function (col) { return col.type === "text"; })
    .map(function (col) { return pos[col.key]; });

  function value(row, key) { return key in pos ? row[pos[key]] : null; }

  function compare(a, b) {
    if (a === b) { return 0; }
    if (a === null || a === undefined) { return 1; }
    if (b === null || b === undefined) { return -1; }
    if (typeof a === "number" && typeof b === "number") { return (a - b) * state.dir; }
    if (typeof a === "boolean") { return ((a ? 1 : 0) - (b ? 1 : 0)) * state.dir; }
    return collator.compare(String(a), String(b)) * state.dir;
  }

  function apply() {
    var q = el.query.value.trim().toLowerCase(), agree = el.agree.value;
    var correct = el.correct ? el.correct.value : "all";
    var out = rows.filter(function (row) {
      if (agree !== "all" && value(row, "agree") !== (agree === "agree")) { return false; }
      if (correct !== "all" && value(row, "correct") !== (correct === "correct")) { return false; }
      if (!q) { return true; }
      return textKeys.some(function (i) {
        return row[i] !== null && String(row[i]).toLowerCase().indexOf(q) >= 0;
      });
    });
    if (state.sort !== null) {
      var i = pos[state.sort];
      out = out.map(function (row, n) { return [row, n]; });
      out.sort(function (a, b) { return compare(a[0][i], b[0][i]) || a[1] - b[1]; });
      out = out.map(function (p) { return p[0]; });
    }
    state.shown = out;
    render();
  }

  function cell(row, col) {
    var td = document.createElement("td"), id = value(row, "id");
    if (col.type === "thumb") {
      var a = document.createElement("a"), img = document.createElement("img");
      a.href = "images/" + id + ".html"; img.src = "thumbs/" + id + ".jpg"; img.alt = "";
      img.className = "thumb"; a.appendChild(img); td.appendChild(a);
      return td;
    }
    var v = value(row, col.key);
    if (col.key === "file") {
      var link = document.createElement("a");
      link.href = "images/" + id + ".html"; link.textContent = v; td.appendChild(link);
    } else if (v === null || v === undefined) {
      td.textContent = "";
    } else if (col.type === "bool") {
      td.textContent = v ? "yes" : "no"; td.className = v ? "yes" : "no";
    } else if (col.type === "num") {
      td.textContent = v.toFixed(3); td.className = "num";
    } else {
      td.textContent = v;
    }
    return td;
  }

  function render() {
    var size = +el.size.value, n = state.shown.length;
    var pages = Math.max(1, Math.ceil(n / size));
    state.page = Math.min(state.page, pages - 1);
    var start = state.page * size, stop = Math.min(n, start + size);
    el.body.textContent = "";
    var frag = document.createDocumentFragment();
    state.shown.slice(start, stop).forEach(function (row) {
      var tr = document.createElement("tr");
      tr.dataset.id = value(row, "id");
      columns.forEach(function (col) { tr.appendChild(cell(row, col)); });
      frag.appendChild(tr);
    });
    el.body.appendChild(frag);
    el.info.textContent = (n ? (start + 1) + "–" + stop : "0") + " of " + n + " images" +
      (n < rows.length ? " (filtered from " + rows.length + ")" : "") +
      " · page " + (state.page + 1) + " of " + pages;
    el.prev.disabled = state.page === 0;
    el.next.disabled = state.page >= pages - 1;
    table.dataset.page = state.page;
  }

  Array.prototype.forEach.call(table.tHead.querySelectorAll("th"), function (th) {
    var button = th.querySelector("button");
    if (!button) { return; }
    button.addEventListener("click", function () {
      var key = th.dataset.key;
      state.dir = state.sort === key ? -state.dir : 1;
      state.sort = key;
      Array.prototype.forEach.call(table.tHead.querySelectorAll("th"), function (other) {
        other.removeAttribute("aria-sort");
      });
      th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
      state.page = 0;
      apply();
    });
  });
  el.query.addEventListener("input", function () { state.page = 0; apply(); });
  el.agree.addEventListener("change", function () { state.page = 0; apply(); });
  if (el.correct) {
    el.correct.addEventListener("change", function () { state.page = 0; apply(); });
  }
  el.size.addEventListener("change", function () { state.page = 0; render(); });
  el.prev.addEventListener("click", function () { state.page -= 1; render(); });
  el.next.addEventListener("click", function () { state.page += 1; render(); });
  document.getElementById("filters").addEventListener("submit", function (ev) {
    ev.preventDefault();
  });
  apply();
  table.dataset.ready = "1";
}());
