/* conformer-xai report: the map viewer of one image page (no framework, no network).
 * Maps arrive as uint8 grids (data/maps/<id>.js); each is coloured through the report's colour
 * map at grid resolution and drawn upsampled (bilinear) over the image on a canvas. */
(function () {
  "use strict";
  var site = window.CX_SITE, maps = window.CX_MAPS;
  var viewer = document.getElementById("viewer");
  if (!site || !maps || !viewer) { return; }
  var layout = site.layouts[maps.layout];
  var bytes = decode(maps.data), lut = decode(site.lut);
  var entries = layout.keys.map(function (key, i) {
    var p = layout.parts[i];
    return {key: key, method: p[0], head: p[1], branch: p[2], block: p[3],
            h: layout.shapes[i][0], w: layout.shapes[i][1], offset: layout.offsets[i]};
  });
  var el = {
    method: document.getElementById("method"), head: document.getElementById("head"),
    branch: document.getElementById("branch"), block: document.getElementById("block"),
    blockValue: document.getElementById("block-value"),
    opacity: document.getElementById("opacity"), matrix: document.getElementById("matrix"),
    matrixNote: document.getElementById("matrix-note")
  };
  var width = +viewer.dataset.width, height = +viewer.dataset.height;
  var picture = viewer.dataset.picture;
  // Spectrogram inputs: every picture and map is unfolded (fold > 1) and flipped so that time
  // runs left to right and low frequencies sit at the bottom (see report/audio.py).
  var audio = viewer.dataset.audio === "1", fold = +viewer.dataset.fold || 1;
  var branches = Array.prototype.map.call(
    viewer.querySelectorAll(".panel"), function (f) { return f.dataset.branch; });

  function decode(text) {
    var raw = atob(text), out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { out[i] = raw.charCodeAt(i); }
    return out;
  }

  function find(method, head, branch, block) {
    for (var i = 0; i < entries.length; i++) {
      var e = entries[i];
      if (e.method === method && e.branch === branch &&
          (e.head === null || e.head === head) && (e.block === null || e.block === block)) {
        return e;
      }
    }
    return null;
  }

  function ofMethod(method) {
    return entries.filter(function (e) { return e.method === method; });
  }

  function draw(canvas, entry) {
    var ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    canvas.dataset.key = entry ? entry.key : "";
    canvas.title = entry ? entry.key : "no map";
    if (!entry) { return; }
    var grid = document.createElement("canvas");
    grid.width = entry.w; grid.height = entry.h;
    var gctx = grid.getContext("2d"), img = gctx.createImageData(entry.w, entry.h);
    for (var i = 0, n = entry.w * entry.h; i < n; i++) {
      var v = bytes[entry.offset + i] * 3;
      img.data[4 * i] = lut[v]; img.data[4 * i + 1] = lut[v + 1];
      img.data[4 * i + 2] = lut[v + 2]; img.data[4 * i + 3] = 255;
    }
    gctx.putImageData(img, 0, 0);
    var target = ctx, into = canvas;
    if (audio) {
      into = document.createElement("canvas");
      into.width = width; into.height = height;
      target = into.getContext("2d");
    }
    target.imageSmoothingEnabled = true;
    target.imageSmoothingQuality = "low";
    target.drawImage(grid, 0, 0, entry.w, entry.h, 0, 0, into.width, into.height);
    if (audio) { unfold(into, canvas); }
  }

  function unfold(source, canvas) {
    var ctx = canvas.getContext("2d"), part = height / fold;
    ctx.imageSmoothingEnabled = false;
    for (var k = 0; k < fold; k++) {
      ctx.save();
      ctx.translate(k * width, part);
      ctx.scale(1, -1);
      ctx.drawImage(source, 0, k * part, width, part, 0, 0, width, part);
      ctx.restore();
    }
  }

  function unfoldPicture(img) {
    var canvas = document.createElement("canvas");
    canvas.className = "picture";
    canvas.width = width * fold; canvas.height = height / fold;
    img.parentNode.insertBefore(canvas, img.nextSibling);
    function go() { unfold(img, canvas); canvas.dataset.drawn = "1"; }
    if (img.complete && img.naturalWidth) { go(); } else { img.addEventListener("load", go); }
  }

  // The block slider steps through the blocks the method has (its value is an index into
  // them), so that runs with --blocks 1,6,12 move 1 -> 6 -> 12.
  var blocks = [];

  function syncControls() {
    var list = ofMethod(el.method.value);
    var heads = list.map(function (e) { return e.head; }).filter(function (h) { return h !== null; });
    Array.prototype.forEach.call(el.head.options, function (o) {
      o.disabled = heads.indexOf(o.value) < 0;
    });
    el.head.disabled = heads.length === 0;
    if (heads.length && heads.indexOf(el.head.value) < 0) { el.head.value = heads[0]; }
    var before = blocks.length ? blocks[+el.block.value] : +viewer.dataset.startBlock;
    blocks = [];
    list.forEach(function (e) {
      if (e.block !== null && blocks.indexOf(e.block) < 0) { blocks.push(e.block); }
    });
    blocks.sort(function (a, b) { return a - b; });
    el.block.disabled = blocks.length === 0;
    el.block.min = 0;
    el.block.max = Math.max(0, blocks.length - 1);
    if (blocks.length) { el.block.value = nearest(before); }
    el.blockValue.textContent = blocks.length ? String(blocks[+el.block.value]) : "all blocks";
  }

  function nearest(block) {
    var best = 0;
    blocks.forEach(function (b, i) {
      if (Math.abs(b - block) < Math.abs(blocks[best] - block)) { best = i; }
    });
    return best;
  }

  function current() {
    return {method: el.method.value, head: el.head.disabled ? null : el.head.value,
            branch: el.branch.value,
            block: el.block.disabled ? null : blocks[+el.block.value]};
  }

  function render() {
    var s = current();
    viewer.dataset.method = s.method; viewer.dataset.head = s.head || "";
    viewer.dataset.branch = s.branch; viewer.dataset.block = s.block === null ? "" : s.block;
    Array.prototype.forEach.call(viewer.querySelectorAll(".panel"), function (fig) {
      var b = fig.dataset.branch, entry = find(s.method, s.head, b, s.block);
      fig.hidden = !(s.branch === "both" || s.branch === b);
      draw(fig.querySelector("canvas.heat"), entry);
      fig.querySelector("figcaption").textContent =
        b + " branch · " + (entry ? entry.key : "no " + s.method + " map here");
    });
    renderMatrix(s);
    setOpacity();
    var hash = "m=" + s.method + "&h=" + (s.head || "") + "&b=" + s.branch + "&k=" +
      (s.block === null ? "" : s.block) + "&o=" + el.opacity.value;
    if (window.history && window.history.replaceState) {
      window.history.replaceState(null, "", "#" + hash);
    }
    ["prev-image", "next-image"].forEach(function (id) {
      var a = document.getElementById(id);
      if (a) { a.href = a.getAttribute("href").split("#")[0] + "#" + hash; }
    });
  }

  function renderMatrix(s) {
    var body = el.matrix.tBodies[0];
    body.textContent = "";
    var heads = [];
    ofMethod(s.method).forEach(function (e) {
      if (e.head !== null && heads.indexOf(e.head) < 0) { heads.push(e.head); }
    });
    if (!heads.length) {
      el.matrixNote.textContent = s.method + " has no classifier head: choose a gradient " +
        "method (e.g. gradcam) for the head-by-branch matrix.";
      el.matrix.hidden = true;
      return;
    }
    el.matrix.hidden = false;
    el.matrixNote.textContent = s.method + (s.block === null ? "" : ", block " + s.block) +
      ": rows are classifier heads, columns branches.";
    var top = document.createElement("tr");
    top.appendChild(document.createElement("th"));
    branches.forEach(function (b) {
      var th = document.createElement("th"); th.scope = "col"; th.textContent = b;
      top.appendChild(th);
    });
    body.appendChild(top);
    heads.forEach(function (h) {
      var tr = document.createElement("tr"), th = document.createElement("th");
      th.scope = "row"; th.textContent = h + " head"; tr.appendChild(th);
      branches.forEach(function (b) {
        var td = document.createElement("td"), stack = document.createElement("div");
        stack.className = picture ? "stack small" : "stack small bare";
        if (picture) {
          var img = document.createElement("img");
          img.src = picture; img.alt = ""; img.width = width; img.height = height;
          img.hidden = audio;
          stack.appendChild(img);
          if (audio) { unfoldPicture(img); }
        }
        var canvas = document.createElement("canvas");
        canvas.className = "heat";
        canvas.width = audio ? width * fold : width;
        canvas.height = audio ? height / fold : height;
        stack.appendChild(canvas); td.appendChild(stack); tr.appendChild(td);
        draw(canvas, find(s.method, h, b, s.block));
      });
      body.appendChild(tr);
    });
  }

  function setOpacity() {
    var a = (+el.opacity.value) / 100;
    Array.prototype.forEach.call(viewer.querySelectorAll("canvas.heat"), function (c) {
      c.style.opacity = picture ? a : 1;
    });
  }

  function step(delta) {
    if (el.block.disabled) { return; }
    var k = Math.min(+el.block.max, Math.max(0, +el.block.value + delta));
    if (k !== +el.block.value) { el.block.value = k; syncControls(); render(); }
  }

  function fromHash() {
    var q = {};
    window.location.hash.replace(/^#/, "").split("&").forEach(function (kv) {
      var i = kv.indexOf("=");
      if (i > 0) { q[kv.slice(0, i)] = decodeURIComponent(kv.slice(i + 1)); }
    });
    function set(select, v) {
      if (v && Array.prototype.some.call(select.options, function (o) { return o.value === v; })) {
        select.value = v;
      }
    }
    set(el.method, q.m); syncControls(); set(el.head, q.h); set(el.branch, q.b);
    if (q.k && blocks.length) { el.block.value = nearest(+q.k); }
    if (q.o) { el.opacity.value = q.o; }
  }

  el.method.addEventListener("change", function () { syncControls(); render(); });
  el.head.addEventListener("change", render);
  el.branch.addEventListener("change", render);
  el.block.addEventListener("input", function () { syncControls(); render(); });
  el.opacity.addEventListener("input", render);
  document.addEventListener("keydown", function (ev) {
    var t = ev.target, tag = t && t.tagName;
    if (t === el.block || tag === "SELECT" || tag === "TEXTAREA" ||
        (tag === "INPUT" && t.type !== "range")) { return; }
    if (ev.key === "ArrowRight" || ev.key === "ArrowUp") { step(1); ev.preventDefault(); }
    if (ev.key === "ArrowLeft" || ev.key === "ArrowDown") { step(-1); ev.preventDefault(); }
  });
  function colorbar() {
    var bar = document.getElementById("colorbar");
    if (!bar) { return; }
    var ctx = bar.getContext("2d"), img = ctx.createImageData(256, 1);
    for (var i = 0; i < 256; i++) {
      img.data[4 * i] = lut[3 * i]; img.data[4 * i + 1] = lut[3 * i + 1];
      img.data[4 * i + 2] = lut[3 * i + 2]; img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
  }

  if (audio) {
    Array.prototype.forEach.call(viewer.querySelectorAll(".panel .stack img"), unfoldPicture);
  }
  colorbar();
  fromHash();
  syncControls();
  render();
  viewer.dataset.ready = "1";
}());
