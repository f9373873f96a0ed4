"""The play page: canvases for the learned and the real game, arrow keys, a frame-rate counter."""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>worldflux play</title>
<style>
  body { background: #15161c; color: #ddd; font: 14px system-ui, sans-serif; margin: 24px; }
  h1 { font-size: 18px; margin: 0 0 12px; }
  .views { display: flex; gap: 24px; }
  .view { text-align: center; }
  canvas { width: 384px; height: 384px; image-rendering: pixelated; background: #000;
           border: 1px solid #444; }
  .bar { margin: 12px 0; display: flex; gap: 16px; align-items: center; }
  button { background: #2b2d3a; color: #ddd; border: 1px solid #555; padding: 6px 12px; }
  #fps { font-weight: bold; color: #8fd18f; min-width: 90px; }
  .hidden { display: none; }
</style>
</head>
<body>
<h1>worldflux play &mdash; <span id="title">loading</span></h1>
<div class="bar">
  <span id="fps">0.0 fps</span>
  <span>model <span id="model_ms">-</span> ms</span>
  <span>action <span id="action">-</span></span>
  <span>reward <span id="reward">0</span></span>
  <span>real score <span id="score">0</span></span>
  <span>steps <span id="steps">0</span></span>
</div>
<div class="bar">
  <button id="reset">New game (start from its first real frame)</button>
  <button id="sync">Start from the real frame now</button>
  <label><input type="checkbox" id="show_real" checked> real game side by side</label>
  <label><input type="checkbox" id="running" checked> running</label>
</div>
<div class="views">
  <div class="view"><div>learned world</div><canvas id="imagined" width="64" height="64"></canvas></div>
  <div class="view" id="real_view"><div>real game</div><canvas id="real" width="64" height="64"></canvas></div>
</div>
<p>Arrow keys act (up, down, left, right); with no key held the world steps with "up".</p>
<script>
const KEYS = {ArrowUp: 0, ArrowDown: 1, ArrowLeft: 2, ArrowRight: 3};
const NAMES = ["up", "down", "left", "right"];
let held = null, lastPressed = null, frameTimes = [], busy = false;
const $ = (id) => document.getElementById(id);

function draw(id, b64) {
  const bytes = Uint8ClampedArray.from(atob(b64), (c) => c.charCodeAt(0));
  $(id).getContext("2d").putImageData(new ImageData(bytes, 64, 64), 0, 0);
}
function show(r) {
  draw("imagined", r.imagined);
  draw("real", r.real);
  $("model_ms").textContent = r.model_ms.toFixed(1);
  $("reward").textContent = r.reward.toFixed(2);
  $("score").textContent = r.score;
  $("steps").textContent = r.steps;
}
async function post(path, body) {
  const res = await fetch(path, {method: "POST", headers: {"Content-Type": "application/json"},
                                 body: JSON.stringify(body || {})});
  return res.json();
}
async function tick() {
  if (!busy && $("running").checked) {
    busy = true;
    const action = held !== null ? held : (lastPressed !== null ? lastPressed : 0);
    lastPressed = null;
    $("action").textContent = NAMES[action];
    try {
      show(await post("/api/step", {action}));
      const now = performance.now();
      frameTimes.push(now);
      while (frameTimes.length && now - frameTimes[0] > 1000) frameTimes.shift();
      const span = frameTimes.length > 1 ? (now - frameTimes[0]) / 1000 : 1;
      const fps = frameTimes.length > 1 ? (frameTimes.length - 1) / span : 0;
      $("fps").textContent = fps.toFixed(1) + " fps";
      $("fps").dataset.fps = fps.toFixed(2);
    } finally { busy = false; }
  }
  requestAnimationFrame(tick);
}
document.addEventListener("keydown", (e) => {
  if (e.key in KEYS) { held = KEYS[e.key]; lastPressed = held; e.preventDefault(); }
});
document.addEventListener("keyup", (e) => { if (e.key in KEYS && held === KEYS[e.key]) held = null; });
$("reset").onclick = async () => show(await post("/api/reset"));
$("sync").onclick = async () => show(await post("/api/sync"));
$("show_real").onchange = () => $("real_view").classList.toggle("hidden", !$("show_real").checked);
fetch("/api/info").then((r) => r.json()).then((info) => {
  $("title").textContent = info.game + " in a learned " + info.family + " model (history " +
    info.history + (info.decoding ? ", " + info.decoding + " decoding" : "") + ")";
});
post("/api/sync").then((r) => { show(r); requestAnimationFrame(tick); });
</script>
</body>
</html>
"""
