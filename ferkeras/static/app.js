// ferkeras' page: live camera frames and uploads go to /api/predict; boxes, labels and
// probability bars are drawn over them. One frame is in flight at a time, so frames go at
// the rate the server answers and no queue grows.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { stream: null, running: false, loop: 0, frames: 0, interval: 0, last: 0 };
// Live frames are sent at most this wide: the detector's time grows with the pixels, and a face
// a camera frames is far larger than the smallest one it finds.
const SEND_WIDTH = 640;

function bars(probabilities) {
  // The server's class order, fixed, so that live rows stay put while their values change.
  const rows = Object.entries(probabilities);
  const top = Math.max(...rows.map(([, p]) => p));
  const grid = document.createElement("div");
  grid.className = "bars";
  for (const [name, p] of rows) {
    const label = document.createElement("span");
    if (p === top) label.className = "top";
    label.textContent = name;
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = (100 * p).toFixed(1) + "%";
    bar.appendChild(fill);
    const value = document.createElement("span");
    value.textContent = p.toFixed(2);
    grid.append(label, bar, value);
  }
  return grid;
}

function listFaces(list, faces) {
  list.replaceChildren();
  faces.forEach((face, i) => {
    const item = document.createElement("li");
    item.className = "face";
    item.dataset.label = face.label;
    if (face.saliency) {
      const figure = document.createElement("figure");
      const img = document.createElement("img");
      img.className = "saliency";
      img.alt = `saliency map of face ${i + 1}`;
      img.src = face.saliency;
      const caption = document.createElement("figcaption");
      caption.textContent = "coloured: the pixels that decided it (SmoothGrad)";
      figure.append(img, caption);
      item.appendChild(figure);
    }
    const text = document.createElement("div");
    const title = document.createElement("strong");
    title.textContent = `face ${i + 1}: ${face.label} ${face.score.toFixed(2)}`;
    text.append(title, bars(face.probabilities));
    item.appendChild(text);
    list.appendChild(item);
  });
  if (!faces.length) {
    const item = document.createElement("li");
    item.textContent = "no face found";
    list.appendChild(item);
  }
}

function drawBoxes(ctx, faces, scale) {
  const width = Math.max(2, Math.round(ctx.canvas.width / 300));
  ctx.lineWidth = width;
  ctx.font = `${Math.max(12, Math.round(ctx.canvas.width / 40))}px system-ui, sans-serif`;
  for (const face of faces) {
    const b = face.box;
    const [x, y, w, h] = [b.x * scale, b.y * scale, b.width * scale, b.height * scale];
    ctx.strokeStyle = "#00e000";
    ctx.strokeRect(x, y, w, h);
    const text = `${face.label} ${face.score.toFixed(2)}`;
    const tw = ctx.measureText(text).width + 8;
    const th = parseInt(ctx.font, 10) + 6;
    const top = y - th >= 0 ? y - th : y + h;
    ctx.fillStyle = "#00e000";
    ctx.fillRect(x, top, tw, th);
    ctx.fillStyle = "#000";
    ctx.fillText(text, x + 4, top + th - 5);
  }
}

async function postImage(blob, query = "") {
  const response = await fetch("/api/predict" + query, { method: "POST", body: blob,
    headers: { "Content-Type": blob.type || "application/octet-stream" } });
  // The server's errors are JSON ({"detail": ...}); a proxy's or a crash's may not be.
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(body.detail || `${response.status} ${response.statusText}`);
    // 503: the server is full and says when to come back (Retry-After, in seconds)
    error.retryAfter = Number(response.headers.get("Retry-After")) || 0;
    throw error;
  }
  return body;
}

// ------------------------------------------------------------------ live camera

async function startCamera() {
  const message = $("camera-message");
  message.hidden = true;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    message.textContent = "This browser offers no camera here (it needs https or localhost).";
    message.hidden = false;
    return;
  }
  $("start").disabled = true;  // one camera: a second click while the browser asks does nothing
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
    const video = $("video");
    video.srcObject = state.stream;
    showLive(true);
    await video.play();
  } catch (error) {
    stopCamera();
    message.textContent = error.name === "NotAllowedError"
      ? "The camera was refused: allow it in the browser's site settings, or upload a photo."
      : error.name === "NotFoundError" ? "No camera was found: upload a photo instead."
      : `The camera could not start (${error.name}): upload a photo instead.`;
    message.hidden = false;
    return;
  }
  state.running = true;
  state.frames = 0;
  state.interval = 0;
  state.last = performance.now();
  $("stop").disabled = false;
  loop();
}

function stopCamera() {
  state.running = false;
  if (state.stream) state.stream.getTracks().forEach((track) => track.stop());
  state.stream = null;
  $("start").disabled = false;
  $("stop").disabled = true;
  showLive(false);
  $("live-faces").replaceChildren();
  $("stats").textContent = "";
}

function showLive(on) {
  $("video").hidden = !on;
  $("live-overlay").hidden = !on;
  $("live-placeholder").hidden = on;
}

async function loop() {
  // A Stop then Start while a frame is out must not leave two loops sending: each loop has a number
  // and ends when a newer one starts.
  const mine = ++state.loop;
  const live = () => state.running && state.loop === mine;
  const video = $("video");
  const overlay = $("live-overlay");
  const grab = document.createElement("canvas");
  while (live()) {
    if (!video.videoWidth) { await new Promise((r) => setTimeout(r, 50)); continue; }
    const shrink = Math.min(1, SEND_WIDTH / video.videoWidth);
    grab.width = Math.round(video.videoWidth * shrink);
    grab.height = Math.round(video.videoHeight * shrink);
    grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
    const blob = await new Promise((r) => grab.toBlob(r, "image/jpeg", 0.85));
    const sent = performance.now();
    let result;
    try {
      result = await postImage(blob);
    } catch (error) {
      $("stats").textContent = `error: ${error.message}`;
      await new Promise((r) => setTimeout(r, Math.max(500, 1000 * (error.retryAfter || 0))));
      continue;
    }
    if (!live()) break;  // stopped while the frame was out: draw nothing
    const now = performance.now();
    const roundTrip = now - sent;
    state.frames += 1;
    // frames/s over the last few frames (an exponential average of the gaps), not since start
    state.interval = state.interval ? 0.8 * state.interval + 0.2 * (now - state.last) : now - state.last;
    state.last = now;
    const fps = 1000 / state.interval;
    overlay.width = video.videoWidth;
    overlay.height = video.videoHeight;
    const ctx = overlay.getContext("2d");
    ctx.clearRect(0, 0, overlay.width, overlay.height);
    drawBoxes(ctx, result.faces, video.videoWidth / grab.width);
    listFaces($("live-faces"), result.faces);
    $("stats").textContent = `${fps.toFixed(1)} frames/s, ${roundTrip.toFixed(0)} ms round trip`;
    $("live-section").dataset.frames = String(state.frames);
  }
}

// ------------------------------------------------------------------ upload

async function upload(file) {
  const status = $("upload-status");
  status.textContent = "analysing… (the first saliency map can take a while)";
  const canvas = $("upload-canvas");
  try {
    const bitmap = await createImageBitmap(file);
    const result = await postImage(file, "?saliency=true");
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    canvas.hidden = false;
    $("upload-placeholder").hidden = true;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(bitmap, 0, 0);
    drawBoxes(ctx, result.faces, 1);
    listFaces($("upload-faces"), result.faces);
    const count = result.faces.length;
    status.textContent = `${count} face${count === 1 ? "" : "s"} in ${result.width}x${result.height}`;
  } catch (error) {
    status.textContent = `error: ${error.message}`;
  }
}

async function health() {
  try {
    const info = await (await fetch("/api/health")).json();
    const accuracy = info.accuracy && info.accuracy.accuracy
      ? `, FER2013 PublicTest accuracy ${info.accuracy.accuracy.toFixed(3)}` : "";
    $("model").textContent = `${info.model}${accuracy} · ${info.detector} detector · ferkeras ${info.version}`;
  } catch (error) {
    $("model").textContent = `server unreachable: ${error.message}`;
  }
}

$("start").addEventListener("click", startCamera);
$("stop").addEventListener("click", stopCamera);
$("file").addEventListener("change", (event) => { if (event.target.files[0]) upload(event.target.files[0]); });
health();
