// The playground: submit a job to this server's /jobs API, follow its server-sent events, play the video.
// Plain JS, no build step and nothing loaded from elsewhere.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const FPS = 25;
  // Any even size works (the model runs at the next multiple of 32 and the frames are cropped to it).
  const SIZES = [
    ["512x288", "512x288, 16:9 landscape"], ["288x512", "288x512, 9:16 portrait"],
    ["768x432", "768x432, 16:9 landscape"], ["432x768", "432x768, 9:16 portrait"],
    ["1280x720", "1280x720, 16:9 720p"], ["720x1280", "720x1280, 9:16 720p"],
    ["1920x1080", "1920x1080, 16:9 1080p"], ["1080x1920", "1080x1920, 9:16 1080p"],
    ["512x512", "512x512, 1:1 square"],
  ];
  // video_size "auto": the start image's aspect ratio, at about as many pixels as width x height.
  const AUTO_AREAS = ["512x288", "768x432", "1280x720", "1920x1080"];
  const DEFAULT_SIZE = "288x512"; // the server's default
  const FRAMES = [9, 25, 49, 73, 97, 121, 161, 241];
  const DEFAULT_FRAMES = 49;
  // Which control shows an error about which request field.
  const CONTROL = {
    prompt: "prompt", seed: "seed", num_inference_steps: "steps", image_start: "image-drop", image_end: "image-end-drop",
    audio: "audio-drop", match_audio_length: "match-audio-label", video: "clip-drop", retake: "clip-drop",
    "retake.start": "retake-start", "retake.end": "retake-end",
    width: "size", height: "size", video_size: "size", num_frames: "length", video_output_type: "format",
    body: "prompt",
  };
  const RECENT_KEY = "ltx2-playground-recent";
  let maxKeyframes = 8; // the schema's keyframes.maxItems, once read
  const EXTENSIONS = { "video/mp4": "mp4", "video/webm": "webm", "video/quicktime": "mov", "image/gif": "gif" };

  function option(select, value, text, selected) {
    const node = document.createElement("option");
    node.value = value;
    node.textContent = text;
    node.selected = !!selected;
    select.appendChild(node);
  }

  function headers(extra) {
    const key = $("key").value.trim() || sessionStorage.getItem("ltx2-key") || "";
    if (key) sessionStorage.setItem("ltx2-key", key);
    return Object.assign(key ? { Authorization: `Bearer ${key}` } : {}, extra || {});
  }

  // The output formats and the named sizes come from the server's own schema, so the pickers offer
  // exactly what it accepts.
  async function loadSchema() {
    let request = null;
    try {
      const spec = await (await fetch("openapi.json", { headers: headers() })).json();
      const schemas = spec.components.schemas;
      request = schemas.GenerateRequest.properties;
      const resolve = (p) => (p && p.$ref ? schemas[p.$ref.split("/").pop()] : p);
      const choices = (prop) => (prop ? prop.enum || (prop.anyOf || []).flatMap((p) => resolve(p).enum || []) : []);
      if (request.keyframes && request.keyframes.maxItems) {
        maxKeyframes = request.keyframes.maxItems;
        $("keyframes-max").textContent = maxKeyframes;
        renumberKeyframes();
      }
      const format = resolve(request.video_output_type);
      const formats = choices(format);
      if (formats.length) formats.forEach((v) => option($("format"), v, v, v === format.default));
      const named = request.video_size || {};
      const presets = named["x-sizes"] || {};
      const group = document.createElement("optgroup");
      group.label = "Named sizes (the hosted API's video_size)";
      for (const name of choices(resolve(named)).filter((n) => n in presets)) {
        option(group, name, `${name}, ${presets[name]}`, false);
      }
      if (group.children.length) $("size").appendChild(group);
    } catch (err) {
      console.warn("could not read the server's schema", err);
    }
    if (!$("format").options.length) option($("format"), "", "MP4 (H.264 + AAC)", true);
  }

  function setup() {
    const sizes = document.createElement("optgroup");
    sizes.label = "Width x height";
    SIZES.forEach(([value, text]) => option(sizes, value, text, value === DEFAULT_SIZE));
    $("size").appendChild(sizes);
    const auto = document.createElement("optgroup");
    auto.label = "auto: the start image's shape";
    AUTO_AREAS.forEach((area) => option(auto, `auto@${area}`, `auto: image's shape, ~${area}`, false));
    $("size").appendChild(auto);
    FRAMES.forEach((n) => option($("length"), n, `${(n / FPS).toFixed(2)} s (${n} frames)`, n === DEFAULT_FRAMES));
    loadSchema();
    for (const kind of ["image", "image-end", "audio", "clip"]) {
      const drop = $(`${kind}-drop`);
      const input = $(kind);
      const show = () => { $(`${kind}-name`).textContent = input.files[0] ? input.files[0].name : ""; };
      input.addEventListener("change", show);
      input.addEventListener("change", lengthFromAudio);
      drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
      drop.addEventListener("dragleave", () => drop.classList.remove("over"));
      drop.addEventListener("drop", (ev) => {
        ev.preventDefault();
        drop.classList.remove("over");
        if (ev.dataTransfer.files.length) { input.files = ev.dataTransfer.files; show(); lengthFromAudio(); }
      });
    }
    $("match-audio").addEventListener("change", lengthFromAudio);
    lengthFromAudio();
    $("clip").addEventListener("change", videoChosen);
    $("clip-drop").addEventListener("drop", videoChosen);
    $("video-preview").addEventListener("loadedmetadata", spanFromVideo);
    for (const end of ["start", "end"]) $(`retake-${end}`).addEventListener("input", () => spanMoved(end));
    $("add-keyframe").addEventListener("click", addKeyframe);
    const key = sessionStorage.getItem("ltx2-key");
    if (key) $("key").value = key;
    renderRecent();
    $("form").addEventListener("submit", submit);
  }

  // "Match the soundtrack's length" applies only with a soundtrack; while it does, the Length picker
  // is not used (the server takes num_frames from the audio).
  function matchingAudio() {
    return !!$("audio").files[0] && $("match-audio").checked;
  }

  function lengthFromAudio() {
    $("match-audio").disabled = !$("audio").files[0];
    $("length").disabled = matchingAudio() || retaking();
  }

  // A video to retake: its own size and length are used (the pickers are off), and the span picker, two
  // sliders over its duration, seeks the preview to the frame each end is at.
  function retaking() {
    return !!$("clip").files[0];
  }

  function videoChosen() {
    const file = $("clip").files[0];
    const preview = $("video-preview");
    if (preview.src) URL.revokeObjectURL(preview.src);
    $("span").hidden = !file;
    $("size").disabled = $("length").disabled = !!file || matchingAudio();
    if (file) preview.src = URL.createObjectURL(file); else preview.removeAttribute("src");
  }

  function spanFromVideo() {
    const seconds = $("video-preview").duration;
    if (!Number.isFinite(seconds)) return;
    for (const end of ["start", "end"]) $(`retake-${end}`).max = seconds.toFixed(2);
    $("retake-start").value = (seconds / 3).toFixed(2); // the middle third, to move from
    $("retake-end").value = (2 * seconds / 3).toFixed(2);
    spanMoved("start");
    spanMoved("end");
  }

  function spanMoved(end) {
    const start = $("retake-start"), stop = $("retake-end");
    if (Number(start.value) >= Number(stop.value)) { // the span never closes: the other end moves along
      if (end === "start") stop.value = Math.min(Number(start.value) + 0.04, Number(stop.max)).toFixed(2);
      else start.value = Math.max(Number(stop.value) - 0.04, 0).toFixed(2);
    }
    $("retake-start-value").textContent = `${Number(start.value).toFixed(2)} s`;
    $("retake-end-value").textContent = `${Number(stop.value).toFixed(2)} s`;
    $("video-preview").currentTime = Number($(`retake-${end}`).value);
  }

  // Keyframes: one row per image (the image, a frame number or a time in seconds, a strength), sent as the
  // `keyframes` list in the rows' order; the server's message for keyframes.N.* marks row N's control.
  function field(labelText, control) {
    const label = document.createElement("label");
    label.append(labelText, control);
    return label;
  }

  function addKeyframe() {
    const rows = $("keyframes");
    if (rows.children.length >= maxKeyframes) return;
    const row = document.createElement("li");
    row.className = "keyframe";
    const image = document.createElement("input");
    Object.assign(image, { type: "file", accept: "image/png,image/jpeg,image/webp,image/gif", className: "kf-image" });
    const unit = document.createElement("select");
    unit.className = "kf-unit";
    option(unit, "frame", "frame", true);
    option(unit, "time", "seconds", false);
    const at = document.createElement("input");
    Object.assign(at, { type: "text", inputMode: "decimal", className: "kf-at", placeholder: "0" });
    const strength = document.createElement("input");
    Object.assign(strength, { type: "text", inputMode: "decimal", className: "kf-strength", value: "1" });
    const remove = document.createElement("button");
    Object.assign(remove, { type: "button", className: "secondary kf-remove", textContent: "Remove" });
    remove.addEventListener("click", () => { row.remove(); renumberKeyframes(); });
    row.append(field("Image", image), field("At", unit), field("Frame or seconds", at), field("Strength", strength),
               remove);
    rows.appendChild(row);
    renumberKeyframes();
  }

  function renumberKeyframes() {
    const rows = [...$("keyframes").children];
    rows.forEach((row, i) => {
      row.id = `keyframe-${i}`;
      for (const part of ["image", "unit", "at", "strength", "remove"]) {
        const node = row.querySelector(`.kf-${part}`);
        node.id = `keyframe-${i}-${part}`;
        node.setAttribute("aria-label", `keyframe ${i + 1} ${part}`);
      }
    });
    $("add-keyframe").disabled = rows.length >= maxKeyframes;
  }

  function keyframeControl(name) { // keyframes.N.frame -> row N's "at" input; keyframes -> the whole box
    const match = /^keyframes(?:\.(\d+)(?:\.(\w+))?)?$/.exec(name || "");
    if (!match) return null;
    if (match[1] === undefined || !$(`keyframe-${match[1]}`)) return "keyframes-box";
    const part = { image: "image", frame: "at", time: "at", strength: "strength" }[match[2]];
    return part ? `keyframe-${match[1]}-${part}` : `keyframe-${match[1]}`;
  }

  async function keyframeItems() {
    return Promise.all([...$("keyframes").children].map(async (row) => {
      const file = row.querySelector(".kf-image").files[0];
      const item = { image: file ? await dataUri(file) : "" }; // none: the server names keyframes.N.image
      item[row.querySelector(".kf-unit").value] = asNumber(row.querySelector(".kf-at").value);
      item.strength = asNumber(row.querySelector(".kf-strength").value);
      return item;
    }));
  }

  function asNumber(text) {
    const n = Number(text);
    return text.trim() !== "" && Number.isFinite(n) ? n : text; // the server names the field if it is not a number
  }

  function dataUri(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(file);
    });
  }

  function clearError() {
    $("error").hidden = true;
    document.querySelectorAll(".invalid").forEach((node) => node.classList.remove("invalid"));
  }

  function showError(body, status) {
    const error = body && body.error;
    const text = typeof error === "string" ? error : (error && error.message) || `the server answered ${status}`;
    $("error").textContent = text;
    $("error").hidden = false;
    const control = body && (CONTROL[body.field] || keyframeControl(body.field));
    if (control) $(control).classList.add("invalid");
    $("status").hidden = true;
  }

  function busy(on) {
    $("submit").disabled = on;
    $("submit").textContent = on ? "Generating…" : "Generate";
  }

  async function submit(ev) {
    ev.preventDefault();
    clearError();
    $("result").hidden = true;
    const body = { prompt: $("prompt").value, response_format: "url" };
    const size = retaking() ? "" : $("size").value; // a retake: the video's own size and length
    if (retaking()) body.retake = { start: Number($("retake-start").value), end: Number($("retake-end").value) };
    else if (matchingAudio()) body.match_audio_length = true; else body.num_frames = Number($("length").value);
    if (!size) { /* nothing to send */ } else if (/^\d+x\d+$/.test(size)) [body.width, body.height] = size.split("x").map(Number);
    else if (size.startsWith("auto@")) { // the image's shape; width x height only sets the pixel count
      body.video_size = "auto";
      [body.width, body.height] = size.slice(5).split("x").map(Number);
    } else body.video_size = size; // a named size: the server sets width and height
    if ($("format").value) body.video_output_type = $("format").value;
    if ($("seed").value.trim()) body.seed = asNumber($("seed").value);
    if ($("steps").value.trim()) body.num_inference_steps = asNumber($("steps").value);
    if ($("lora").value) body.loras = [{ path: $("lora").value }]; // a LoRA trained in the Train tab
    busy(true);
    try {
      if ($("image").files[0]) body.image_start = await dataUri($("image").files[0]);
      if ($("image-end").files[0]) body.image_end = await dataUri($("image-end").files[0]);
      if ($("audio").files[0]) body.audio = await dataUri($("audio").files[0]);
      if (retaking()) body.video = await dataUri($("clip").files[0]);
      if ($("keyframes").children.length) body.keyframes = await keyframeItems();
      const response = await fetch("jobs", { method: "POST", body: JSON.stringify(body),
                                             headers: headers({ "Content-Type": "application/json" }) });
      const job = await response.json().catch(() => null);
      if (!response.ok) { showError(job, response.status); return; }
      await follow(job, body);
    } catch (err) {
      showError({ error: `could not reach the server: ${err.message}` });
    } finally {
      busy(false);
    }
  }

  function showProgress(view) {
    $("status").hidden = false;
    const bar = $("progress");
    if (view.status === "queued") {
      $("status-text").textContent = `Waiting in the queue (position ${view.position})…`;
    } else if (view.status === "running") {
      if (view.total) { bar.max = view.total; bar.value = view.step; }
      $("status-text").textContent = view.total ? `Denoising step ${view.step} of ${view.total}…` : "Starting…";
    }
  }

  // Server-sent events read through fetch (EventSource cannot send the API key header).
  async function follow(job, request) {
    showProgress(job);
    $("progress").value = 0;
    let final = null;
    try {
      const response = await fetch(job.links.events, { headers: headers() });
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      while (!final) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const chunk = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = chunk.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
          if (!data) continue;
          const view = JSON.parse(data);
          if (/^event: result/m.test(chunk)) { final = view; break; }
          showProgress(view);
        }
      }
    } catch (err) {
      console.warn("event stream interrupted; polling instead", err);
    }
    while (!final) { // the stream ended early: poll the job instead
      const view = await (await fetch(job.links.self, { headers: headers() })).json();
      if (["succeeded", "failed", "cancelled"].includes(view.status)) final = view; else showProgress(view);
      if (!final) await new Promise((r) => setTimeout(r, 1000));
    }
    if (final.status !== "succeeded") {
      showError(final.error || { error: `the job was ${final.status}` });
      return;
    }
    $("progress").value = $("progress").max;
    $("status-text").textContent = "Done.";
    await showVideo(final, request);
  }

  // The result is shown by what it is (the Content-Type): a video plays in <video>, an image (an
  // animated GIF) shows in <img>; a video this browser cannot play (ProRes) gets its download link.
  async function showVideo(view, request) {
    const response = await fetch(view.links.video, { headers: headers() });
    if (!response.ok) { showError(await response.json().catch(() => null), response.status); return; }
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const type = blob.type.split(";")[0];
    const ext = EXTENSIONS[type] || "mp4";
    const result = view.result;
    const asImage = type.startsWith("image/");
    const playable = !asImage && $("video").canPlayType(type || "video/mp4") !== "";
    $("video").hidden = !playable;
    $("result-image").hidden = !asImage;
    if (playable) $("video").src = url; else $("video").removeAttribute("src");
    if (asImage) $("result-image").src = url; else $("result-image").removeAttribute("src");
    $("unplayable").hidden = asImage || playable;
    $("download").href = url;
    $("download").download = `ltx2-${view.id}.${ext}`;
    $("download").textContent = `Download (${(blob.size / 1e6).toFixed(1)} MB, .${ext})`;
    $("result-info").textContent =
      `${result.resolution}, ${result.duration_seconds} s, seed ${result.seed}, ${result.generation_time_seconds} s to make`;
    $("result").hidden = false;
    const recent = JSON.parse(sessionStorage.getItem(RECENT_KEY) || "[]");
    recent.unshift({ id: view.id, prompt: request.prompt, info: $("result-info").textContent, url: view.links.video });
    sessionStorage.setItem(RECENT_KEY, JSON.stringify(recent.slice(0, 20)));
    renderRecent();
  }

  function renderRecent() {
    const list = $("recent");
    list.textContent = "";
    for (const item of JSON.parse(sessionStorage.getItem(RECENT_KEY) || "[]")) {
      const li = document.createElement("li");
      const link = document.createElement("a");
      link.href = item.url;
      link.textContent = item.prompt.length > 70 ? `${item.prompt.slice(0, 70)}…` : item.prompt;
      li.append(link, ` — ${item.info}`);
      list.appendChild(li);
    }
  }

  setup();
})();
