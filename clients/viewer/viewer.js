// cortexcast viewer: subscribes to decoded frames over WebSocket (msgpack), draws the reconstruction
// beside the stimulus, scores them (SSIM and PixCorr, as the report defines them) and charts latency.
// Plain browser JavaScript: no build step. Reconnects by itself.
'use strict';
(function () {
  const $ = (id) => document.getElementById(id);
  const unpackr = new msgpackr.Unpackr({ useRecords: false });
  const params = new URLSearchParams(location.search);
  const token = params.get('token');
  const state = { frames: 0, dropped: 0, lastSeq: new Map(), times: [], lat: [], scores: [], models: [], ws: null, backoff: 500 };

  async function loadModels() {
    const r = await fetch('api/models', token ? { headers: { authorization: 'Bearer ' + token } } : {});
    const j = await r.json();
    state.models = j.models;
    const sel = $('model');
    sel.innerHTML = '';
    for (const m of j.models) sel.add(new Option(m.name + ' (' + m.kind + ')', m.name));
    if (params.get('model')) sel.value = params.get('model');
  }

  function connect() {
    const model = $('model').value || '*';
    const u = new URL('ws', location.href);
    u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    u.searchParams.set('model', model);
    u.searchParams.set('stream', '*');
    if (token) u.searchParams.set('token', token);
    const ws = new WebSocket(u);
    ws.binaryType = 'arraybuffer';
    state.ws = ws;
    ws.onopen = () => {
      state.backoff = 500;
      $('conn').textContent = 'live';
      $('conn').className = 'pill ok';
    };
    ws.onmessage = (ev) => onMessage(unpackr.unpack(new Uint8Array(ev.data)));
    ws.onclose = () => {
      $('conn').textContent = 'reconnecting';
      $('conn').className = 'pill';
      if (state.ws === ws) setTimeout(connect, (state.backoff = Math.min(5000, state.backoff * 2)));
    };
  }

  function onMessage(m) {
    if (m.type === 'hello') return;
    if (m.type !== 'frame') return;
    const received = performance.timeOrigin + performance.now();
    const streamSel = $('stream');
    if (![...streamSel.options].some((o) => o.value === m.stream)) streamSel.add(new Option(m.stream, m.stream));
    if (streamSel.value !== '*' && streamSel.value !== m.stream) return;
    // seq is a uint64: a BigInt above 2^53; gaps are counted in plain numbers.
    const seq = Number(m.seq);
    const last = state.lastSeq.get(m.stream);
    if (last !== undefined && seq > last + 1) state.dropped += seq - last - 1;
    state.lastSeq.set(m.stream, seq);
    state.frames++;
    state.times.push(received);
    state.lat.push({ t: received, server: m.t.sent - m.t.ingested, dec: m.t.decodeEnd - m.t.decodeStart, e2e: rigToBrowser(m.t, received) });
    draw($('recon'), m.pixels, m.width, m.height);
    // The stimulus the decoded window answers (the server pairs them); none: a blank screen then.
    if (!m.stimulus) blank($('stimulus'));
    else {
      draw($('stimulus'), m.stimulus.pixels, m.stimulus.width, m.stimulus.height);
      if (m.stimulus.width === m.width && m.stimulus.height === m.height) {
        state.scores.push({ ssim: ssim(minMax(m.stimulus.pixels), minMax(m.pixels), m.height, m.width), pixcorr: pixCorr(m.stimulus.pixels, m.pixels) });
        if (state.scores.length > 30) state.scores.shift();
      }
    }
    $('imageId').textContent = m.imageId ? '#' + m.imageId : '';
    const info = state.models.find((x) => x.name === m.model);
    windowNotes(info && info.responseWindow, !!m.stimulus);
    $('modelInfo').textContent = m.model + (info ? ' (' + info.kind + ', ' + info.width + 'x' + info.height + ')' : '');
    $('provider').textContent = m.provider;
    $('neurons').textContent = info ? info.neurons.toLocaleString() : '-';
    $('calibration').textContent = calibrationNote(info);
    learningCurve(info && info.learningCurve);
  }

  // A live calibration's learning curve (the server lists it for bundles `cortexcast calibrate` wrote).
  function learningCurve(points) {
    $('curveBox').hidden = !points || points.length < 2;
    if ($('curveBox').hidden) return;
    const c = $('curve'), ctx = c.getContext('2d');
    ctx.fillStyle = '#181818';
    ctx.fillRect(0, 0, c.width, c.height);
    const maxFrames = points[points.length - 1].frames || 1;
    const lo = Math.min(...points.map((p) => p.ssim)), hi = Math.max(...points.map((p) => p.ssim));
    const span = Math.max(0.01, hi - lo);
    const X = (f) => 36 + (c.width - 44) * (f / maxFrames), Y = (v) => c.height - 16 - (c.height - 28) * ((v - lo) / span);
    ctx.fillStyle = '#666';
    ctx.font = '10px sans-serif';
    ctx.fillText(hi.toFixed(3), 2, 12);
    ctx.fillText(lo.toFixed(3), 2, c.height - 16);
    ctx.fillText(maxFrames + ' frames', c.width - 60, c.height - 3);
    ctx.strokeStyle = '#7bd389';
    ctx.beginPath();
    points.forEach((p, i) => (i ? ctx.lineTo(X(p.frames), Y(p.ssim)) : ctx.moveTo(X(p.frames), Y(p.ssim))));
    ctx.stroke();
  }

  // Bundles written by `cortexcast calibrate` record their calibration in the manifest metrics.
  function calibrationNote(info) {
    const m = (info && info.metrics) || {};
    if (m['validation.calibration_frames'] === undefined) return '-';
    const ssim = m['validation.ssim'];
    return m['validation.calibration_frames'] + ' frames' + (ssim === undefined ? '' : ', held-out SSIM ' + ssim.toFixed(3)) + ' (refit ' + m['validation.calibration_refits'] + ')';
  }

  // Reloads swap bundles (a calibration refits every few seconds): keep the model facts current.
  async function refreshFacts() {
    const r = await fetch('api/models', token ? { headers: { authorization: 'Bearer ' + token } } : {});
    if (r.ok) state.models = (await r.json()).models;
  }

  // Continuous streams: the reconstruction is the mean of the newest lengthFrames imaging frames and
  // answers the stimulus shown lagFrames + lengthFrames - 1 frames before the newest one.
  function windowNotes(w, shown) {
    const continuous = w && (w.lengthFrames > 1 || w.lagFrames > 0);
    const back = continuous ? w.lagFrames + w.lengthFrames - 1 : 0;
    const ms = continuous && w.rateHz ? ', ' + Math.round((1000 * back) / w.rateHz) + ' ms' : '';
    $('shownWhen').textContent = !continuous ? (shown ? '' : '(none)') : shown ? 'on screen ' + back + ' frames' + ms + ' before' : '(blank screen ' + back + ' frames' + ms + ' before)';
    $('window').textContent = continuous ? 'mean of the last ' + w.lengthFrames + ' frames' : '';
  }

  function blank(canvas) {
    const c = canvas.getContext('2d');
    c.fillStyle = '#000';
    c.fillRect(0, 0, canvas.width, canvas.height);
  }

  // The stages the server measures use one clock. Rig to browser subtracts the rig's clock from the
  // browser's: shown only when every hop comes out non-negative (within 2 ms) and under a minute, i.e.
  // when the three clocks agree; otherwise it would be a clock offset, not a latency.
  function rigToBrowser(t, received) {
    if (!t.acquired) return NaN;
    const slack = 2;
    const agree = t.ingested - t.acquired >= -slack && received - t.sent >= -slack && received - t.acquired < 60000;
    return agree ? received - t.acquired : NaN;
  }

  // Drawn min-max stretched, as the report shows reconstructions (a decoder's output is low in contrast).
  function draw(canvas, pixels, w, h) {
    const scaled = minMax(pixels);
    const off = document.createElement('canvas');
    off.width = w;
    off.height = h;
    const ctx = off.getContext('2d');
    const img = ctx.createImageData(w, h);
    for (let i = 0; i < w * h; i++) {
      img.data[4 * i] = img.data[4 * i + 1] = img.data[4 * i + 2] = Math.round(255 * scaled[i]);
      img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    const c = canvas.getContext('2d');
    c.imageSmoothingEnabled = false;
    c.drawImage(off, 0, 0, canvas.width, canvas.height);
  }

  // Metrics exactly as the report's Table I: min-max scaling, 11x11 Gaussian SSIM (sigma 1.5), valid region.
  function minMax(p) {
    let lo = Infinity, hi = -Infinity;
    for (const v of p) { if (v < lo) lo = v; if (v > hi) hi = v; }
    const out = new Float64Array(p.length);
    for (let i = 0; i < p.length; i++) out[i] = (p[i] - lo) / (hi - lo + 1e-8);
    return out;
  }
  const WIN = (() => { const w = []; let s = 0; for (let i = -5; i <= 5; i++) { const v = Math.exp(-0.5 * i * i / 2.25); w.push(v); s += v; } return w.map((v) => v / s); })();
  function filt(x, h, w) {
    const ow = w - 10, oh = h - 10, tmp = new Float64Array(h * ow), out = new Float64Array(oh * ow);
    for (let y = 0; y < h; y++) for (let x0 = 0; x0 < ow; x0++) { let s = 0; for (let j = 0; j < 11; j++) s += WIN[j] * x[y * w + x0 + j]; tmp[y * ow + x0] = s; }
    for (let y0 = 0; y0 < oh; y0++) for (let x0 = 0; x0 < ow; x0++) { let s = 0; for (let j = 0; j < 11; j++) s += WIN[j] * tmp[(y0 + j) * ow + x0]; out[y0 * ow + x0] = s; }
    return out;
  }
  function ssim(a, b, h, w) {
    const n = a.length, aa = new Float64Array(n), bb = new Float64Array(n), ab = new Float64Array(n);
    for (let i = 0; i < n; i++) { aa[i] = a[i] * a[i]; bb[i] = b[i] * b[i]; ab[i] = a[i] * b[i]; }
    const [ux, uy, uxx, uyy, uxy] = [a, b, aa, bb, ab].map((m) => filt(m, h, w));
    const c1 = 1e-4, c2 = 9e-4;
    let s = 0;
    for (let i = 0; i < ux.length; i++) {
      const vx = uxx[i] - ux[i] * ux[i], vy = uyy[i] - uy[i] * uy[i], vxy = uxy[i] - ux[i] * uy[i];
      s += ((2 * ux[i] * uy[i] + c1) * (2 * vxy + c2)) / ((ux[i] * ux[i] + uy[i] * uy[i] + c1) * (vx + vy + c2));
    }
    return s / ux.length;
  }
  function pixCorr(a, b) {
    const n = a.length; let ma = 0, mb = 0;
    for (let i = 0; i < n; i++) { ma += a[i] / n; mb += b[i] / n; }
    let sab = 0, saa = 0, sbb = 0;
    for (let i = 0; i < n; i++) { const da = a[i] - ma, db = b[i] - mb; sab += da * db; saa += da * da; sbb += db * db; }
    return sab / Math.sqrt(saa * sbb + 1e-30);
  }
  const pct = (v, p) => { const s = v.filter(Number.isFinite).sort((x, y) => x - y); return s.length ? s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))] : NaN; };
  const fmt = (v) => (Number.isFinite(v) ? v.toFixed(1) + ' ms' : '-');

  function refresh() {
    const now = performance.timeOrigin + performance.now();
    state.times = state.times.filter((t) => now - t < 2000);
    state.lat = state.lat.filter((l) => now - l.t < 10000);
    $('frames').textContent = String(state.frames);
    $('fps').textContent = (state.times.length / 2).toFixed(1) + ' /s';
    $('dropped').textContent = String(state.dropped);
    const e2e = state.lat.map((l) => l.e2e), dec = state.lat.map((l) => l.dec), srv = state.lat.map((l) => l.server);
    $('server').textContent = fmt(pct(srv, 50)) + ' / ' + fmt(pct(srv, 99));
    $('e2e').textContent = state.lat.length && !e2e.some(Number.isFinite) ? 'n/a (clocks disagree)' : fmt(pct(e2e, 50)) + ' / ' + fmt(pct(e2e, 99));
    $('decode').textContent = fmt(pct(dec, 50)) + ' / ' + fmt(pct(dec, 99));
    if (state.scores.length) {
      const mean = (k) => state.scores.reduce((s, x) => s + x[k], 0) / state.scores.length;
      $('ssim').textContent = mean('ssim').toFixed(3);
      $('pixcorr').textContent = mean('pixcorr').toFixed(3);
    }
    chart(now);
  }

  function chart(now) {
    const c = $('chart'), ctx = c.getContext('2d');
    ctx.fillStyle = '#181818';
    ctx.fillRect(0, 0, c.width, c.height);
    const top = Math.max(5, pct(state.lat.map((l) => l.server), 99) * 1.2 || 5);
    ctx.fillStyle = '#666';
    ctx.font = '10px sans-serif';
    ctx.fillText(top.toFixed(0) + ' ms', 4, 12);
    for (const [key, color] of [['server', '#4ea1ff'], ['dec', '#ffb347']]) {
      ctx.strokeStyle = color;
      ctx.beginPath();
      state.lat.forEach((l, i) => {
        const x = c.width * (1 - (now - l.t) / 10000), y = c.height - (Math.min(l[key], top) / top) * (c.height - 16);
        if (Number.isFinite(y)) (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y));
      });
      ctx.stroke();
    }
  }

  $('model').onchange = () => { const ws = state.ws; state.ws = null; if (ws) ws.close(); state.lastSeq.clear(); connect(); };
  // The figures then describe the chosen stream only.
  $('stream').onchange = () => { state.lastSeq.clear(); state.lat = []; state.times = []; };
  setInterval(refresh, 250);
  loadModels().then(connect, () => setTimeout(() => location.reload(), 2000));
  setInterval(() => refreshFacts().catch(() => undefined), 5000);
})();
