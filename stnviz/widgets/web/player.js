// stnviz frame player: the frames (one list of encoded pictures per panel) arrive once per
// recording; scrubbing and playing happen here, in the page, without asking the kernel. The
// `frame` trait goes back to the kernel throttled (at most one message per THROTTLE_MS, the last
// position always sent), and a `frame` set from Python moves the page.

const THROTTLE_MS = 120;
const SPEEDS = [0.25, 0.5, 1, 2, 4];
const SVG = "http://www.w3.org/2000/svg";

function make(tag, cls, parent) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (parent) parent.appendChild(node);
  return node;
}

function blobUrl(view, format) {
  return URL.createObjectURL(new Blob([view], { type: `image/${format}` }));
}

function render({ model, el }) {
  el.classList.add("stnviz-player");
  const bar = make("div", "stnviz-player-bar", el);
  const play = make("button", "stnviz-player-play", bar);
  play.type = "button";
  const slider = make("input", "stnviz-player-slider", bar);
  slider.type = "range";
  slider.min = 0;
  slider.step = 1;
  const position = make("span", "stnviz-player-position", bar);
  const speed = make("select", "stnviz-player-speed", bar);
  speed.title = "playing speed";
  for (const s of SPEEDS) {
    const opt = make("option", "", speed);
    opt.value = String(s);
    opt.textContent = `${s}x`;
  }
  speed.value = "1";
  const panels = make("div", "stnviz-player-panels", el);
  const figures = make("div", "stnviz-player-figures", panels);
  const caption = make("div", "stnviz-player-caption", panels);
  const plotBox = make("div", "stnviz-player-plot", el);
  const plotTitle = make("div", "stnviz-player-title", plotBox);
  const plotStack = make("div", "stnviz-player-plot-stack", plotBox);
  const plotImg = make("img", "stnviz-player-plot-image", plotStack);
  plotImg.alt = "";
  const marker = document.createElementNS(SVG, "svg");
  marker.classList.add("stnviz-player-marker");
  plotStack.appendChild(marker);

  let urls = [];  // [panel][frame] blob URLs
  let images = [];  // [panel] <img>
  let plotUrl = null;
  let current = -1;
  let timer = null;  // playing
  let pending = null, sendTimer = null, lastSent = 0;

  const count = () => (urls.length ? urls[0].length : 0);

  function sendFrame(i) {
    pending = i;
    if (sendTimer !== null) return;
    const wait = Math.max(0, lastSent + THROTTLE_MS - performance.now());
    sendTimer = setTimeout(() => {
      sendTimer = null;
      lastSent = performance.now();
      if (pending !== model.get("frame")) {
        model.set("frame", pending);
        model.save_changes();
      }
    }, wait);
  }

  function drawMarker(i) {
    const lines = model.get("markers") || [];
    const parts = [];
    for (const [xs, top, bottom] of lines) {
      if (i < xs.length) parts.push(`<line x1="${xs[i]}" x2="${xs[i]}" y1="${top}" y2="${bottom}"/>`);
    }
    marker.setAttribute("stroke", model.get("marker_color"));
    marker.innerHTML = parts.join("");
  }

  function show(i, { send = false } = {}) {
    const n = count();
    if (!n) return;
    i = Math.max(0, Math.min(n - 1, i | 0));
    if (i !== current) {
      current = i;
      images.forEach((img, p) => { img.src = urls[p][i]; });
      const captions = model.get("captions") || [];
      caption.innerHTML = captions[i] || "";
      drawMarker(i);
    }
    slider.value = String(i);
    position.textContent = `${model.get("label")} ${i} (of 0\u2013${n - 1})`;
    el.dataset.frame = String(i);
    if (send) sendFrame(i);
  }

  function stop() {
    if (timer !== null) clearTimeout(timer);
    timer = null;
    play.textContent = "\u25B6";
    play.title = "play";
    el.classList.remove("stnviz-playing");
  }

  function step() {
    const n = count();
    if (current >= n - 1) { stop(); sendFrame(current); return; }
    show(current + 1, { send: true });
    timer = setTimeout(step, model.get("interval") / Number(speed.value));
  }

  function start() {
    if (count() < 2) return;
    if (current >= count() - 1) show(0, { send: true });  // at the end: play from the start
    play.textContent = "\u23F8";
    play.title = "pause";
    el.classList.add("stnviz-playing");
    timer = setTimeout(step, model.get("interval") / Number(speed.value));
  }

  function loadFrames() {
    stop();
    for (const list of urls) list.forEach((u) => URL.revokeObjectURL(u));
    const frames = model.get("frames") || [];
    const titles = model.get("titles") || [];
    const format = model.get("format");
    urls = frames.map((list) => list.map((view) => blobUrl(view, format)));
    figures.replaceChildren();
    images = urls.map((_, p) => {
      const figure = make("figure", "stnviz-player-panel", figures);
      const title = make("figcaption", "stnviz-player-title", figure);
      title.textContent = titles[p] || "";
      const img = make("img", "stnviz-player-frame", figure);
      img.alt = titles[p] || "frame";
      img.dataset.panel = String(p);
      return img;
    });
    slider.max = String(Math.max(0, count() - 1));
    slider.disabled = play.disabled = count() < 2;
    current = -1;
    show(model.get("frame"));
  }

  function loadPlot() {
    if (plotUrl) URL.revokeObjectURL(plotUrl);
    plotUrl = null;
    const plot = model.get("plot");
    const has = plot && plot.byteLength > 0;
    plotBox.style.display = has ? "" : "none";
    plotTitle.textContent = model.get("plot_title") || "";
    if (has) {
      plotUrl = blobUrl(plot, model.get("plot_format"));
      plotImg.src = plotUrl;
      const [w, h] = model.get("plot_size");
      plotImg.style.width = `${w}px`;  // shown at the size it was drawn, never rescaled
      marker.setAttribute("width", w);
      marker.setAttribute("height", h);
      marker.setAttribute("viewBox", `0 0 ${w} ${h}`);
    }
    drawMarker(current);
  }

  play.addEventListener("click", () => (timer === null ? start() : stop()));
  slider.addEventListener("input", () => { stop(); show(Number(slider.value), { send: true }); });
  const onFrame = () => { if (model.get("frame") !== current) show(model.get("frame")); };
  const onFrames = () => loadFrames();
  const onPlot = () => loadPlot();
  const onLabel = () => show(current);
  model.on("change:frame", onFrame);
  model.on("change:frames", onFrames);
  model.on("change:captions", onFrames);
  model.on("change:titles", onFrames);
  model.on("change:plot", onPlot);
  model.on("change:markers", onPlot);
  model.on("change:label", onLabel);
  stop();
  loadFrames();
  loadPlot();

  return () => {  // the view is removed
    stop();
    if (sendTimer !== null) clearTimeout(sendTimer);
    for (const list of urls) list.forEach((u) => URL.revokeObjectURL(u));
    if (plotUrl) URL.revokeObjectURL(plotUrl);
    model.off("change:frame", onFrame);
    model.off("change:frames", onFrames);
    model.off("change:captions", onFrames);
    model.off("change:titles", onFrames);
    model.off("change:plot", onPlot);
    model.off("change:markers", onPlot);
    model.off("change:label", onLabel);
  };
}

export default { render };
