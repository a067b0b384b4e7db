// The Train tab: upload a zip of captioned clips to POST /trainings, follow its events (step, loss,
// ETA, a loss plot), and "Try it": the next generation above uses the new LoRA and its trigger word.
(() => {
  const $ = (id) => document.getElementById(id);
  const auth = () => {
    const key = $("key").value.trim() || sessionStorage.getItem("ltx2-key") || "";
    return key ? { Authorization: `Bearer ${key}` } : {};
  };
  let trained = null;

  function plot(losses) {
    const canvas = $("loss-plot"), g = canvas.getContext("2d");
    g.clearRect(0, 0, canvas.width, canvas.height);
    if (losses.length < 2) return;
    const lo = Math.min(...losses), hi = Math.max(...losses), span = hi - lo || 1;
    g.strokeStyle = "#36c"; g.beginPath();
    losses.forEach((v, i) => {
      const x = (i / (losses.length - 1)) * (canvas.width - 4) + 2;
      const y = canvas.height - 2 - ((v - lo) / span) * (canvas.height - 4);
      if (i) g.lineTo(x, y); else g.moveTo(x, y);
    });
    g.stroke();
  }

  function show(t, losses) {
    const eta = t.eta_seconds == null ? "" : `, ETA ${Math.round(t.eta_seconds)} s`;
    $("train-status").textContent = t.stage === "training" && t.step
      ? `step ${t.step}/${t.steps}, loss ${t.loss.toFixed(4)}${eta}` : `${t.status}: ${t.stage}`;
    plot(losses);
  }

  async function follow(t) {
    const losses = [...(t.losses || [])];
    const response = await fetch(t.links.events, { headers: auth() });
    const reader = response.body.getReader(), decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end); buffer = buffer.slice(end + 2);
        const data = block.split("\n").find((l) => l.startsWith("data: "));
        if (!data) continue;
        const view = JSON.parse(data.slice(6));
        if (block.startsWith("event: result")) return view;
        if (view.step && view.losses.length) losses[view.step - 1] = view.losses[view.losses.length - 1];
        show(view, losses.filter((v) => v != null));
      }
    }
    return (await fetch(t.links.self, { headers: auth() })).json();
  }

  async function train(ev) {
    ev.preventDefault();
    $("train-error").hidden = true; $("try-it").hidden = true;
    const form = new FormData();
    form.append("dataset", $("train-dataset").files[0]);
    for (const field of ["name", "steps", "resolution", "num_frames", "trigger", "rank"]) {
      const value = $(`train-${field}`).value.trim();
      if (value) form.append(field, value);
    }
    $("train-submit").disabled = true;
    try {
      const response = await fetch("trainings", { method: "POST", body: form, headers: auth() });
      const t = await response.json();
      if (!response.ok) throw new Error(`${t.field ? t.field + ": " : ""}${t.error}`);
      const done = await follow(t);
      show(done, done.losses || []);
      if (done.status !== "succeeded") throw new Error((done.error && done.error.error) || done.status);
      trained = { name: done.lora.name, trigger: $("train-trigger").value.trim() };
      $("try-it").hidden = false;
    } catch (err) {
      $("train-error").textContent = err.message; $("train-error").hidden = false;
    } finally {
      $("train-submit").disabled = false;
    }
  }

  function tryIt() {
    $("lora").value = trained.name;  // read by the generate form's submit
    if (trained.trigger && !$("prompt").value.startsWith(trained.trigger)) {
      $("prompt").value = `${trained.trigger} ${$("prompt").value}`;
    }
    $("lora-note").textContent = `Next video uses the LoRA ${trained.name}.`;
    $("prompt").focus();
  }

  $("train-form").addEventListener("submit", train);
  $("try-it").addEventListener("click", tryIt);
})();
