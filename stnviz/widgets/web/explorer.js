// The explorer's geometry in the page: the sampling grid of each family and torch's grid_sample
// (bilinear, align_corners=False, zero padding), ported from stnviz.geometry so the page warps the
// image exactly as PyTorch does. Coordinates are normalised (x, y) in [-1, 1] (the outer edges of
// the image, align_corners=False); theta maps output points to input points.

export const TOL = 1e-7; // geometry's float32 tolerance for w = 0 and singular matrices

/** The K = n * n TPS rest points, a lattice over [-1, 1]^2, x varying fastest (flat 2K). */
export function tpsRest(k) {
  const n = Math.round(Math.sqrt(k));
  const out = new Float64Array(2 * k);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
    out[2 * (i * n + j)] = -1 + (2 * j) / (n - 1);
    out[2 * (i * n + j) + 1] = -1 + (2 * i) / (n - 1);
  }
  return out;
}

/** What the input view's caption tells the hand, per family. */
const DRAG_HINTS = {
  affine: "input: drag the region, its corners or the round handle",
  projective: "input: drag the region or any of its four corners",
  tps: "input: drag a control point to bend the region, or the region to move it",
};

/** Identity parameters of a family (affine 6, projective 8, TPS 2K). */
export function identity(family, k) {
  if (family === "affine") return [1, 0, 0, 0, 1, 0];
  if (family === "projective") return [1, 0, 0, 0, 1, 0, 0, 0];
  return Array.from(tpsRest(k));
}

// U(r) = r^2 log r^2 as a function of r^2, U(0) = 0 (geometry._tps_radial)
const radial = (d2) => d2 * Math.log(Math.max(d2, 1e-20));

/** Inverse of an n x n matrix (flat, row-major), Gauss-Jordan with partial pivoting. */
function inverse(m, n) {
  const a = Float64Array.from(m);
  const inv = new Float64Array(n * n);
  for (let i = 0; i < n; i++) inv[i * n + i] = 1;
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(a[r * n + c]) > Math.abs(a[p * n + c])) p = r;
    if (Math.abs(a[p * n + c]) < 1e-300) throw new Error("TPS source points are degenerate");
    if (p !== c) for (let j = 0; j < n; j++) {
      [a[p * n + j], a[c * n + j]] = [a[c * n + j], a[p * n + j]];
      [inv[p * n + j], inv[c * n + j]] = [inv[c * n + j], inv[p * n + j]];
    }
    const d = a[c * n + c];
    for (let j = 0; j < n; j++) { a[c * n + j] /= d; inv[c * n + j] /= d; }
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = a[r * n + c];
      if (f === 0) continue;
      for (let j = 0; j < n; j++) { a[r * n + j] -= f * a[c * n + j]; inv[r * n + j] -= f * inv[c * n + j]; }
    }
  }
  return inv;
}

/** (N, K) weights (flat) so that weights @ targets is the TPS image of points (flat 2N) for the
 * rest lattice of K points: geometry._tps_weights. */
export function tpsWeights(k, points) {
  const src = tpsRest(k), n = k + 3, count = points.length / 2;
  const system = new Float64Array(n * n);
  for (let i = 0; i < k; i++) {
    for (let j = 0; j < k; j++) {
      const dx = src[2 * i] - src[2 * j], dy = src[2 * i + 1] - src[2 * j + 1];
      system[i * n + j] = radial(dx * dx + dy * dy);
    }
    const p1 = [1, src[2 * i], src[2 * i + 1]];
    for (let c = 0; c < 3; c++) { system[i * n + k + c] = p1[c]; system[(k + c) * n + i] = p1[c]; }
  }
  const inv = inverse(system, n);
  const w = new Float64Array(count * k), basis = new Float64Array(n);
  for (let p = 0; p < count; p++) {
    const x = points[2 * p], y = points[2 * p + 1];
    for (let i = 0; i < k; i++) {
      const dx = x - src[2 * i], dy = y - src[2 * i + 1];
      basis[i] = radial(dx * dx + dy * dy);
    }
    basis[k] = 1; basis[k + 1] = x; basis[k + 2] = y;
    for (let j = 0; j < k; j++) {
      let s = 0;
      for (let i = 0; i < n; i++) s += basis[i] * inv[i * n + j];
      w[p * k + j] = s;
    }
  }
  return w;
}

/** Output pixel centres (flat 2 * H * W), normalised, align_corners=False: (2 i + 1) / n - 1. */
export function pixelCentres(h, w) {
  const out = new Float64Array(2 * h * w);
  for (let i = 0; i < h; i++) for (let j = 0; j < w; j++) {
    out[2 * (i * w + j)] = (2 * j + 1) / w - 1;
    out[2 * (i * w + j) + 1] = (2 * i + 1) / h - 1;
  }
  return out;
}

const tpsCache = new Map(); // "K,H,W" -> weights of the output pixel centres

function tpsGridWeights(k, h, w) {
  const key = `${k},${h},${w}`;
  if (!tpsCache.has(key)) {
    if (tpsCache.size > 4) tpsCache.clear();
    tpsCache.set(key, tpsWeights(k, pixelCentres(h, w)));
  }
  return tpsCache.get(key);
}

/** Why a transform cannot be drawn ("" when it can): non-finite numbers, a singular matrix, a
 * homography whose w changes sign or reaches 0 over the output (the horizon crosses it). */
export function invalidReason(family, p, h, w) {
  if (!p.every(Number.isFinite)) return "a parameter is not a finite number";
  if (family === "affine") {
    const det = p[0] * p[4] - p[1] * p[3];
    const size = Math.max(1, ...[p[0], p[1], p[3], p[4]].map(Math.abs));
    if (Math.abs(det) <= 1e-6 * size * size) {
      return `singular transform (det = ${det.toPrecision(2)}): the output collapses onto a line or a point`;
    }
  }
  if (family === "projective") {
    const m = [...p, 1];
    const det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) + m[2] * (m[3] * m[7] - m[4] * m[6]);
    const size = Math.max(...m.map(Math.abs));
    if (Math.abs(det) <= 1e-6 * size ** 3) {
      return "this homography is singular: it flattens the output onto a line or a point";
    }
    // w is affine in (x, y): its sign over the output is its sign at the outermost pixel centres
    const ex = 1 - 1 / w, ey = 1 - 1 / h;
    const ws = [[-ex, -ey], [ex, -ey], [ex, ey], [-ex, ey]].map(([x, y]) => p[6] * x + p[7] * y + 1);
    if (ws.some((v) => Math.abs(v) <= TOL) || (Math.min(...ws) < 0 && Math.max(...ws) > 0)) {
      // the same words as explorer_state.HORIZON_MESSAGE
      return "this homography sends part of the output to infinity (its horizon crosses the output): " +
        "lower the perspective entries h31, h32";
    }
  }
  return "";
}

/** Map normalised output points (flat 2N) to input points (flat 2N). */
export function mapPoints(family, p, points, k) {
  const n = points.length / 2, out = new Float64Array(2 * n);
  if (family === "tps") {
    const wts = tpsWeights(k, points);
    for (let i = 0; i < n; i++) {
      let sx = 0, sy = 0;
      for (let j = 0; j < k; j++) { sx += wts[i * k + j] * p[2 * j]; sy += wts[i * k + j] * p[2 * j + 1]; }
      out[2 * i] = sx; out[2 * i + 1] = sy;
    }
    return out;
  }
  const m = family === "affine" ? [p[0], p[1], p[2], p[3], p[4], p[5], 0, 0] : p;
  for (let i = 0; i < n; i++) {
    const x = points[2 * i], y = points[2 * i + 1];
    const wz = m[6] * x + m[7] * y + 1;
    out[2 * i] = (m[0] * x + m[1] * y + m[2]) / wz;
    out[2 * i + 1] = (m[3] * x + m[4] * y + m[5]) / wz;
  }
  return out;
}

/** The sampling grid (flat 2 * H * W, normalised (x, y)) of a family's parameters: affine_grid,
 * projective_grid or tps_grid. `out` is reused when it has the right length. */
export function makeGrid(family, p, h, w, k, out) {
  const n = h * w;
  const g = out && out.length === 2 * n ? out : new Float64Array(2 * n);
  if (family === "tps") {
    const wts = tpsGridWeights(k, h, w);
    for (let o = 0; o < n; o++) {
      let sx = 0, sy = 0;
      const row = o * k;
      for (let j = 0; j < k; j++) { const c = wts[row + j]; sx += c * p[2 * j]; sy += c * p[2 * j + 1]; }
      g[2 * o] = sx; g[2 * o + 1] = sy;
    }
    return g;
  }
  const m = family === "affine" ? [p[0], p[1], p[2], p[3], p[4], p[5], 0, 0] : p;
  for (let i = 0; i < h; i++) {
    const y = (2 * i + 1) / h - 1;
    for (let j = 0; j < w; j++) {
      const x = (2 * j + 1) / w - 1;
      const wz = m[6] * x + m[7] * y + 1;
      const o = 2 * (i * w + j);
      g[o] = (m[0] * x + m[1] * y + m[2]) / wz;
      g[o + 1] = (m[3] * x + m[4] * y + m[5]) / wz;
    }
  }
  return g;
}

/** torch.nn.functional.grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)
 * of an RGBA uint8 image (H, W) at a grid (flat 2 * Ho * Wo) into `dst` (RGBA, Ho * Wo * 4).
 * Zero padding is the colour `pad` (RGBA): the display of a zero pixel. */
export function gridSample(src, h, w, grid, dst, pad) {
  const n = grid.length / 2, p0 = pad[0], p1 = pad[1], p2 = pad[2];
  for (let o = 0; o < n; o++) {
    const d = 4 * o;
    const ix = ((grid[2 * o] + 1) * w - 1) / 2, iy = ((grid[2 * o + 1] + 1) * h - 1) / 2;
    if (!(ix > -1 && iy > -1 && ix < w && iy < h)) { // no corner inside (or NaN): all padding
      dst[d] = p0; dst[d + 1] = p1; dst[d + 2] = p2; dst[d + 3] = 255;
      continue;
    }
    const x0 = Math.floor(ix), y0 = Math.floor(iy), fx = ix - x0, fy = iy - y0;
    const okx0 = x0 >= 0, okx1 = x0 + 1 < w, oky0 = y0 >= 0, oky1 = y0 + 1 < h;
    const w00 = (1 - fx) * (1 - fy), w10 = fx * (1 - fy), w01 = (1 - fx) * fy, w11 = fx * fy;
    let r = 0, g = 0, b = 0, padW = 0, s;
    if (oky0 && okx0) { s = 4 * (y0 * w + x0); r += w00 * src[s]; g += w00 * src[s + 1]; b += w00 * src[s + 2]; } else padW += w00;
    if (oky0 && okx1) { s = 4 * (y0 * w + x0 + 1); r += w10 * src[s]; g += w10 * src[s + 1]; b += w10 * src[s + 2]; } else padW += w10;
    if (oky1 && okx0) { s = 4 * ((y0 + 1) * w + x0); r += w01 * src[s]; g += w01 * src[s + 1]; b += w01 * src[s + 2]; } else padW += w01;
    if (oky1 && okx1) { s = 4 * ((y0 + 1) * w + x0 + 1); r += w11 * src[s]; g += w11 * src[s + 1]; b += w11 * src[s + 2]; } else padW += w11;
    dst[d] = r + padW * p0;
    dst[d + 1] = g + padW * p1;
    dst[d + 2] = b + padW * p2;
    dst[d + 3] = 255;
  }
}

/** geometry.decompose_affine of a flat theta: {rotation_deg, scale_x, scale_y, shear, tx, ty},
 * or null for a singular one. */
export function decompose(p) {
  const [a11, a12, tx, a21, a22, ty] = p;
  if (invalidReason("affine", p, 2, 2)) return null;
  const sx = Math.hypot(a11, a21), det = a11 * a22 - a12 * a21;
  const c = a11 / sx, s = a21 / sx, sy = det / sx;
  return { rotation_deg: (Math.atan2(a21, a11) * 180) / Math.PI, scale_x: sx, scale_y: sy,
    shear: (c * a12 + s * a22) / sy, tx, ty };
}

/** geometry.compose_affine: parts -> flat theta. */
export function compose(q) {
  const r = (q.rotation_deg * Math.PI) / 180, c = Math.cos(r), s = Math.sin(r);
  return [c * q.scale_x, (c * q.shear - s) * q.scale_y, q.tx, s * q.scale_x, (s * q.shear + c) * q.scale_y, q.ty];
}

/** The homography (flat 8, h33 = 1) taking the output corners (-1,-1), (1,-1), (1,1), (-1,1) to
 * `corners` (flat 8), or null when they are degenerate (three on a line). */
export function homographyFromCorners(corners) {
  const src = [-1, -1, 1, -1, 1, 1, -1, 1];
  const a = new Float64Array(64), b = new Float64Array(8);
  for (let i = 0; i < 4; i++) {
    const x = src[2 * i], y = src[2 * i + 1], u = corners[2 * i], v = corners[2 * i + 1];
    a.set([x, y, 1, 0, 0, 0, -u * x, -u * y], 16 * i);
    a.set([0, 0, 0, x, y, 1, -v * x, -v * y], 16 * i + 8);
    b[2 * i] = u; b[2 * i + 1] = v;
  }
  let inv;
  try { inv = inverse(a, 8); } catch (e) { return null; }
  const h = [];
  for (let i = 0; i < 8; i++) { let s = 0; for (let j = 0; j < 8; j++) s += inv[i * 8 + j] * b[j]; h.push(s); }
  return h.every(Number.isFinite) ? h : null;
}

// ------------------------------------------------------------------ the widget
// Synced traits (ThetaExplorer's view): image (RGBA bytes), image_shape [H, W], output_shape
// [Ho, Wo], pad (RGB of a zero pixel), family, families, control_points, params, learned,
// presets [{name, title, params}], index, count, prediction [[label, p]], message, view_size.
// The page warps locally on every event and sends `params` to the kernel, throttled.

const SEND_MS = 60; // at most one params message per this many ms while the hand moves
const SETTLE_MS = 80; // the hand is still this long: the kernel is asked for the model's answer
const SVG = "http://www.w3.org/2000/svg";
const MARGIN = 0.25; // grey margin around the input, a fraction of its side
const PARTS = [["rotation_deg", "rotation °", -180, 180, 0.1], ["scale_x", "scale x", 0.05, 3, 0.01],
  ["scale_y", "scale y", 0.05, 3, 0.01], ["shear", "shear", -2, 2, 0.01], ["tx", "move x", -2, 2, 0.01],
  ["ty", "move y", -2, 2, 0.01]];
const ENTRY_NAMES = { affine: ["a11", "a12", "tx", "a21", "a22", "ty"],
  projective: ["h11", "h12", "h13", "h21", "h22", "h23", "h31", "h32"] };

function svgEl(tag, attrs, parent) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function htmlEl(tag, cls, parent, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

const fmt = (v, d = 3) => (Number.isFinite(v) ? (Math.round(v * 10 ** d) / 10 ** d + 0).toFixed(d) : "—");

/** Points around the output border (flat), `n` per side, clockwise on screen from the top-left. */
function outlinePoints(n) {
  const out = [];
  for (const [x0, y0, dx, dy] of [[-1, -1, 1, 0], [1, -1, 0, 1], [1, 1, -1, 0], [-1, 1, 0, -1]]) {
    for (let i = 0; i < n; i++) out.push(x0 + (2 * dx * i) / n, y0 + (2 * dy * i) / n);
  }
  return out;
}

function render({ model, el }) {
  const root = htmlEl("div", "stnviz-explorer", el);
  const st = { family: model.get("family"), k: model.get("control_points"), p: model.get("params").slice(),
    parts: null, point: 0, grid: null, out: null, drag: null, sendTimer: null, lastSent: 0, invalid: "" };
  st.parts = st.family === "affine" ? decompose(st.p) : null;

  // header: image picker, family switch, presets
  const head = htmlEl("div", "stnviz-head", root);
  const pickLabel = htmlEl("label", "stnviz-picker", head, "image ");
  const picker = htmlEl("input", "stnviz-picker-range", pickLabel);
  Object.assign(picker, { type: "range", min: 0, step: 1 });
  const pickText = htmlEl("span", "stnviz-picker-text", pickLabel);
  const famLabel = htmlEl("label", "stnviz-family", head, "transform ");
  const famSelect = htmlEl("select", "stnviz-family-select", famLabel);
  const presetBox = htmlEl("span", "stnviz-presets", head);

  // views: input + region (canvas + svg overlay) | output canvas | numbers and prediction
  const views = htmlEl("div", "stnviz-views", root);
  const inBox = htmlEl("div", "stnviz-view", views);
  const inCaption = htmlEl("div", "stnviz-caption", inBox, "");
  const stage = htmlEl("div", "stnviz-stage", inBox);
  const inCanvas = htmlEl("canvas", "stnviz-input", stage);
  const svg = svgEl("svg", { class: "stnviz-overlay", viewBox: `${-1 - 2 * MARGIN} ${-1 - 2 * MARGIN} ${2 + 4 * MARGIN} ${2 + 4 * MARGIN}`,
    preserveAspectRatio: "none" }, stage);
  const ghost = svgEl("polygon", { class: "stnviz-ghost", "vector-effect": "non-scaling-stroke" }, svg);
  const region = svgEl("polygon", { class: "stnviz-region", "vector-effect": "non-scaling-stroke" }, svg);
  const stem = svgEl("line", { class: "stnviz-stem", "vector-effect": "non-scaling-stroke" }, svg);
  const handles = svgEl("g", { class: "stnviz-handles" }, svg);
  const outBox = htmlEl("div", "stnviz-view", views);
  htmlEl("div", "stnviz-caption", outBox, "what the transformer passes on");
  const outStage = htmlEl("div", "stnviz-out-stage", outBox);
  const outCanvas = htmlEl("canvas", "stnviz-output", outStage);
  const side = htmlEl("div", "stnviz-side", views);
  htmlEl("div", "stnviz-caption", side, "the numbers");
  const numbers = htmlEl("pre", "stnviz-theta", side);
  const predBox = htmlEl("div", "stnviz-prediction", side);
  const message = htmlEl("div", "stnviz-message", root);
  const controls = htmlEl("div", "stnviz-controls", root);

  let image = null, imageH = 0, imageW = 0, pad = [0, 0, 0], outH = 0, outW = 0;
  const sliders = []; // {range, box, get(), set(v)}

  function loadImage() {
    [imageH, imageW] = model.get("image_shape");
    [outH, outW] = model.get("output_shape");
    const bytes = model.get("image");
    const buf = bytes instanceof DataView ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
      : new Uint8Array(bytes.buffer || bytes);
    image = buf;
    pad = model.get("pad");
    inCanvas.width = imageW; inCanvas.height = imageH;
    inCanvas.getContext("2d").putImageData(new ImageData(new Uint8ClampedArray(buf), imageW, imageH), 0, 0);
    outCanvas.width = outW; outCanvas.height = outH;
    st.out = new ImageData(outW, outH);
    const size = model.get("view_size"), big = Math.max(imageH, imageW), bigOut = Math.max(outH, outW);
    const dw = (size * imageW) / big, dh = (size * imageH) / big;
    Object.assign(stage.style, { width: `${dw * (1 + 2 * MARGIN)}px`, height: `${dh * (1 + 2 * MARGIN)}px` });
    Object.assign(inCanvas.style, { left: `${dw * MARGIN}px`, top: `${dh * MARGIN}px`, width: `${dw}px`, height: `${dh}px` });
    Object.assign(outCanvas.style, { width: `${(size * outW) / bigOut}px`, height: `${(size * outH) / bigOut}px` });
    const smooth = big > size ? "auto" : "pixelated";
    inCanvas.style.imageRendering = smooth;
    outCanvas.style.imageRendering = Math.max(outH, outW) > size ? "auto" : "pixelated";
    const count = model.get("count");
    Object.assign(picker, { max: count - 1, value: model.get("index"), disabled: count < 2 });
    pickText.textContent = ` ${model.get("index") + 1} of ${count}`;
  }

  // ---------------------------------------------------------------- drawing
  function paint() {
    st.invalid = invalidReason(st.family, st.p, outH, outW);
    const d = st.out.data;
    if (st.invalid) {
      for (let i = 0; i < d.length; i += 4) { d[i] = d[i + 1] = d[i + 2] = 128; d[i + 3] = 255; }
    } else {
      st.grid = makeGrid(st.family, st.p, outH, outW, st.k, st.grid);
      gridSample(image, imageH, imageW, st.grid, d, pad);
    }
    outCanvas.getContext("2d").putImageData(st.out, 0, 0);
    root.classList.toggle("stnviz-invalid", !!st.invalid);
    drawOverlay();
    showNumbers();
    if (famSelect.value !== st.family) famSelect.value = st.family;
    inCaption.textContent = DRAG_HINTS[st.family];
    root.dataset.params = JSON.stringify(st.p);
    root.dataset.family = st.family;
    performance.mark("stnviz-explorer-paint");
    root.dispatchEvent(new CustomEvent("stnviz-paint"));
  }

  function polygon(family, p) {
    const pts = mapPoints(family, p, outlinePoints(family === "tps" ? 12 : 1), st.k);
    let s = "";
    for (let i = 0; i < pts.length; i += 2) s += `${pts[i]},${pts[i + 1]} `;
    return pts.every(Number.isFinite) ? s : "";
  }

  function corners(p) { return mapPoints(st.family, p, [-1, -1, 1, -1, 1, 1, -1, 1], st.k); }

  function handle(cls, x, y, r, data) {
    const c = svgEl("circle", { class: `stnviz-handle ${cls}`, cx: x, cy: y, r, "vector-effect": "non-scaling-stroke" }, handles);
    Object.assign(c.dataset, data);
    return c;
  }

  function drawOverlay() {
    region.setAttribute("points", st.invalid && st.family === "projective" ? "" : polygon(st.family, st.p));
    const learned = model.get("learned");
    ghost.setAttribute("points", learned.length === st.p.length ? polygon(st.family, learned) : "");
    handles.replaceChildren();
    stem.setAttribute("visibility", "hidden");
    if (st.invalid && st.family === "projective") {
      for (let i = 0; i < 4; i++) { const c = st.cornerCache || []; if (c.length) handle(`stnviz-corner stnviz-corner-${i}`, c[2 * i], c[2 * i + 1], 0.06, { corner: i }); }
      return;
    }
    if (st.family === "tps") {
      for (let i = 0; i < st.k; i++) {
        handle(`stnviz-point stnviz-point-${i}${i === st.point ? " stnviz-selected" : ""}`, st.p[2 * i], st.p[2 * i + 1], 0.05, { point: i });
      }
      return;
    }
    const c = corners(st.p);
    st.cornerCache = c;
    for (let i = 0; i < 4; i++) handle(`stnviz-corner stnviz-corner-${i}`, c[2 * i], c[2 * i + 1], 0.06, { corner: i });
    if (st.family === "affine") {
      const [top, knob] = rotationKnob(st.p);
      Object.entries({ x1: top[0], y1: top[1], x2: knob[0], y2: knob[1] }).forEach(([a, v]) => stem.setAttribute(a, v));
      stem.setAttribute("visibility", "visible");
      handle("stnviz-rotate", knob[0], knob[1], 0.07, { rotate: 1 });
    }
  }

  /** The middle of the region's top edge and the rotation knob beyond it (normalised input). */
  function rotationKnob(p) {
    const m = mapPoints("affine", p, [0, -1, 0, 0], st.k);
    const dx = m[0] - m[2], dy = m[1] - m[3], len = Math.hypot(dx, dy) || 1;
    return [[m[0], m[1]], [m[0] + (0.3 * dx) / len, m[1] + (0.3 * dy) / len]];
  }

  function showNumbers() {
    let text;
    if (st.family === "affine") {
      const p = st.p, q = decompose(p);
      text = `θ  ${fmt(p[0])} ${fmt(p[1])} ${fmt(p[2])}\n   ${fmt(p[3])} ${fmt(p[4])} ${fmt(p[5])}\n\n` + (q
        ? `rotation ${fmt(q.rotation_deg, 1)}°\nscale    ${fmt(q.scale_x)} × ${fmt(q.scale_y)}\nshear    ${fmt(q.shear)}\nmove     ${fmt(q.tx)} ${fmt(q.ty)}`
        : "singular: no rotation / scale");
    } else if (st.family === "projective") {
      const h = [...st.p, 1];
      text = [0, 1, 2].map((r) => (r ? "   " : "H  ") + h.slice(3 * r, 3 * r + 3).map((v) => fmt(v)).join(" ")).join("\n");
    } else {
      text = `point ${st.point + 1} of ${st.k}\nx ${fmt(st.p[2 * st.point])}\ny ${fmt(st.p[2 * st.point + 1])}`;
    }
    numbers.textContent = text;
    message.textContent = st.invalid || model.get("message");
    message.classList.toggle("stnviz-warn", !!(st.invalid || model.get("message")));
    for (const s of sliders) {
      const v = s.get();
      if (!Number.isFinite(v)) continue;
      if (document.activeElement !== s.range) s.range.value = v;
      if (document.activeElement !== s.box) s.box.value = fmt(v, s.digits);
    }
  }

  function showPrediction() {
    const pred = model.get("prediction");
    predBox.replaceChildren();
    if (!pred.length) return;
    htmlEl("div", "stnviz-caption", predBox, "the model says, for this region");
    for (const [label, p] of pred) {
      const row = htmlEl("div", "stnviz-pred-row", predBox);
      const bar = htmlEl("span", "stnviz-pred-bar", row);
      bar.style.width = `${Math.round(60 * p)}px`;
      htmlEl("span", "stnviz-pred-label", row, ` ${label} ${(100 * p).toFixed(0)}%`);
    }
  }

  // ---------------------------------------------------------------- state changes
  function setParams(p, { keepParts = false, send = true } = {}) {
    st.p = p.map(Number);
    if (st.family === "affine" && !keepParts) st.parts = decompose(st.p) || st.parts;
    paint();
    if (send) { scheduleSend(); clearTimeout(st.settleTimer); st.settleTimer = setTimeout(settle, SETTLE_MS); }
  }

  /** The hand stopped (let go, or still for SETTLE_MS): send the parameters now and tell the
   * kernel, which answers with the model's prediction for them. */
  function settle() {
    clearTimeout(st.settleTimer); clearTimeout(st.sendTimer);
    st.lastSent = performance.now();
    model.set("params", st.p.slice());
    model.set("settled", model.get("settled") + 1);
    model.save_changes();
  }

  function scheduleSend(now = false) {
    clearTimeout(st.sendTimer);
    const wait = now ? 0 : Math.max(0, SEND_MS - (performance.now() - st.lastSent));
    st.sendTimer = setTimeout(() => {
      st.lastSent = performance.now();
      model.set("params", st.p.slice());
      model.save_changes();
    }, wait);
  }

  function buildControls() {
    controls.replaceChildren();
    sliders.length = 0;
    const slider = (parent, label, cls, lo, hi, step, get, set, digits = 3) => {
      const row = htmlEl("label", `stnviz-slider ${cls}`, parent);
      htmlEl("span", "stnviz-slider-label", row, label);
      const range = htmlEl("input", "stnviz-range", row);
      Object.assign(range, { type: "range", min: lo, max: hi, step });
      const box = htmlEl("input", "stnviz-number", row);
      Object.assign(box, { type: "number", step });
      range.addEventListener("input", () => set(Number(range.value)));
      range.addEventListener("change", settle);
      const typed = () => { if (Number.isFinite(box.valueAsNumber)) { set(box.valueAsNumber); settle(); } };
      box.addEventListener("change", typed);
      box.addEventListener("keydown", (ev) => { if (ev.key === "Enter") typed(); });
      sliders.push({ range, box, get, set, digits });
    };
    if (st.family === "tps") {
      const col = htmlEl("div", "stnviz-column", controls);
      htmlEl("div", "stnviz-caption", col, `${st.k} control points: drag one, or pick it and slide`);
      const pick = htmlEl("select", "stnviz-tps-point", col);
      for (let i = 0; i < st.k; i++) htmlEl("option", "", pick, `point ${i + 1}`).value = i;
      pick.value = st.point;
      pick.addEventListener("change", () => { st.point = Number(pick.value); paint(); });
      st.pointSelect = pick;
      ["x", "y"].forEach((a, j) => slider(col, `point ${a}`, `stnviz-tps-${a}`, -1.5, 1.5, 0.001,
        () => st.p[2 * st.point + j], (v) => { const p = st.p.slice(); p[2 * st.point + j] = v; setParams(p); }));
      return;
    }
    const names = ENTRY_NAMES[st.family];
    const raw = htmlEl("div", "stnviz-column", controls);
    htmlEl("div", "stnviz-caption", raw, st.family === "affine" ? "θ entries" : "homography entries (h33 = 1)");
    names.forEach((n, i) => {
      const small = n === "h31" || n === "h32";
      slider(raw, n, `stnviz-entry stnviz-entry-${i}`, small ? -1 : -2, small ? 1 : 2, 0.001,
        () => st.p[i], (v) => { const p = st.p.slice(); p[i] = v; setParams(p); });
    });
    if (st.family !== "affine") return;
    const parts = htmlEl("div", "stnviz-column", controls);
    htmlEl("div", "stnviz-caption", parts, "as rotation, scale, shear and move");
    for (const [n, label, lo, hi, step] of PARTS) {
      slider(parts, label, `stnviz-part stnviz-part-${n}`, lo, hi, step / 10,
        () => (st.parts ? st.parts[n] : NaN),
        (v) => { const q = { ...(st.parts || decompose(identity("affine"))) }; q[n] = v; st.parts = q; setParams(compose(q), { keepParts: true }); },
        n === "rotation_deg" ? 1 : 3);
    }
  }

  function buildHeader() {
    famSelect.replaceChildren();
    for (const [value, label] of model.get("families")) htmlEl("option", "", famSelect, label).value = value;
    famSelect.value = st.family;
    presetBox.replaceChildren();
    for (const { name, title, params } of model.get("presets")) {
      const b = htmlEl("button", `stnviz-preset stnviz-preset-${name.replace(/[^a-z0-9]+/gi, "-")}`, presetBox, name);
      b.title = title;
      b.addEventListener("click", () => { setParams(params); settle(); });
    }
  }

  // ---------------------------------------------------------------- the hand on the input view
  function toNormalised(ev) {
    const pt = svg.createSVGPoint();
    pt.x = ev.clientX; pt.y = ev.clientY;
    const q = pt.matrixTransform(svg.getScreenCTM().inverse());
    return [q.x, q.y];
  }

  svg.addEventListener("pointerdown", (ev) => {
    const t = ev.target, at = toNormalised(ev);
    const d = { start: at, p0: st.p.slice(), kind: null };
    if (t.dataset && t.dataset.rotate) d.kind = "rotate";
    else if (t.dataset && t.dataset.corner !== undefined) { d.kind = "corner"; d.corner = Number(t.dataset.corner); d.c0 = corners(st.p); }
    else if (t.dataset && t.dataset.point !== undefined) {
      d.kind = "point"; d.point = Number(t.dataset.point); st.point = d.point;
      if (st.pointSelect) st.pointSelect.value = d.point;
    } else if (t === region) { d.kind = "move"; d.c0 = st.family === "projective" ? corners(st.p) : null; }
    if (!d.kind) return;
    ev.preventDefault();
    svg.setPointerCapture(ev.pointerId);
    st.drag = d;
    root.classList.add("stnviz-dragging");
  });

  svg.addEventListener("pointermove", (ev) => {
    const d = st.drag;
    if (!d) return;
    const [x, y] = toNormalised(ev), dx = x - d.start[0], dy = y - d.start[1], p0 = d.p0;
    let p = null;
    if (d.kind === "move") {
      if (st.family === "affine") p = [p0[0], p0[1], p0[2] + dx, p0[3], p0[4], p0[5] + dy];
      else if (st.family === "projective") p = homographyFromCorners(d.c0.map((v, i) => v + (i % 2 ? dy : dx)));
      else p = p0.map((v, i) => v + (i % 2 ? dy : dx));
    } else if (d.kind === "point") {
      p = p0.slice(); p[2 * d.point] = x; p[2 * d.point + 1] = y;
    } else if (d.kind === "corner" && st.family === "projective") {
      const c = d.c0.slice(); c[2 * d.corner] = x; c[2 * d.corner + 1] = y;
      p = homographyFromCorners(c);
    } else if (d.kind === "corner") { // scale the region's own axes about its centre, so the corner follows
      const [a, b, tx, c, e, ty] = p0, det = a * e - b * c;
      const qx = (e * (x - tx) - b * (y - ty)) / det, qy = (-c * (x - tx) + a * (y - ty)) / det;
      const cx = [-1, 1, 1, -1][d.corner], cy = [-1, -1, 1, 1][d.corner];
      const clamp = (s) => (Math.abs(s) < 0.02 ? (s < 0 ? -0.02 : 0.02) : s);
      const sx = clamp(qx / cx), sy = clamp(qy / cy);
      p = [a * sx, b * sy, tx, c * sx, e * sy, ty];
    } else if (d.kind === "rotate") {
      const [tx, ty] = [p0[2], p0[5]];
      const r = Math.atan2(y - ty, x - tx) - Math.atan2(d.start[1] - ty, d.start[0] - tx);
      const cs = Math.cos(r), sn = Math.sin(r);
      p = [cs * p0[0] - sn * p0[3], cs * p0[1] - sn * p0[4], tx, sn * p0[0] + cs * p0[3], sn * p0[1] + cs * p0[4], ty];
    }
    if (p && p.every(Number.isFinite)) setParams(p);
  });

  const endDrag = (ev) => {
    if (!st.drag) return;
    st.drag = null;
    root.classList.remove("stnviz-dragging");
    if (svg.hasPointerCapture(ev.pointerId)) svg.releasePointerCapture(ev.pointerId);
    settle();
  };
  svg.addEventListener("pointerup", endDrag);
  svg.addEventListener("pointercancel", endDrag);

  picker.addEventListener("input", () => { pickText.textContent = ` ${Number(picker.value) + 1} of ${model.get("count")}`; });
  picker.addEventListener("change", () => { model.set("index", Number(picker.value)); model.save_changes(); });
  famSelect.addEventListener("change", () => {
    const fam = famSelect.value;
    st.family = fam; st.point = 0;
    model.set("family", fam);
    st.p = identity(fam, st.k);
    model.set("params", st.p.slice());
    model.save_changes();
    buildControls(); paint();
  });

  // ---------------------------------------------------------------- the kernel's changes
  const fromKernel = () => {
    const fam = model.get("family"), k = model.get("control_points");
    const rebuild = fam !== st.family || k !== st.k;
    st.family = fam; st.k = k;
    if (rebuild) { st.point = 0; st.parts = null; buildControls(); }
    const p = model.get("params");
    const n = fam === "affine" ? 6 : fam === "projective" ? 8 : 2 * k;
    if (p.length !== n) return; // the family came first: its parameters are on their way
    if (p.length !== st.p.length || p.some((v, i) => v !== st.p[i]) || rebuild) {
      st.p = p.slice();
      if (st.family === "affine") st.parts = decompose(st.p) || st.parts;
    }
    paint();
  };
  const onImage = () => { loadImage(); paint(); };
  model.on("change:params", fromKernel);
  model.on("change:family", fromKernel);
  model.on("change:control_points", fromKernel);
  model.on("change:image", onImage);
  model.on("change:output_shape", onImage);
  model.on("change:learned", drawOverlay);
  model.on("change:presets", buildHeader);
  model.on("change:families", buildHeader);
  model.on("change:prediction", showPrediction);
  model.on("change:message", showNumbers);
  model.on("change:index", () => { picker.value = model.get("index"); pickText.textContent = ` ${model.get("index") + 1} of ${model.get("count")}`; });

  loadImage(); buildHeader(); buildControls(); paint(); showPrediction();
  return () => { clearTimeout(st.sendTimer); clearTimeout(st.settleTimer); };
}

export default { render };
