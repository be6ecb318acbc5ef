"""The live page served at ``/``: one self-contained HTML document (no CDN, no external fonts or
scripts: field devices are offline). It polls ``/api/state`` once a second and shows, per camera, the
annotated MJPEG stream, top-k bars, FPS, latency and health, plus the last sightings. A token given
as ``/?token=…`` is passed on to every request the page makes."""

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgefg live</title>
<style>
:root{--bg:#101418;--card:#1b2128;--fg:#e8eef2;--mut:#8a99a6;--ok:#3fb950;--bad:#f85149;--warn:#d29922;--bar:#2f81f7}
*{box-sizing:border-box}body{margin:0;font:15px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:var(--bg);color:var(--fg)}
header{display:flex;flex-wrap:wrap;gap:.5em 1.5em;align-items:baseline;padding:.7em 1em;border-bottom:1px solid #263039}
header h1{font-size:1.1em;margin:0}header span{color:var(--mut);font-size:.9em}
main{display:grid;gap:1em;padding:1em;grid-template-columns:repeat(auto-fill,minmax(min(100%,420px),1fr))}
.card{background:var(--card);border-radius:10px;overflow:hidden}
.card img{display:block;width:100%;aspect-ratio:4/3;object-fit:contain;background:#000}
.body{padding:.6em .9em .9em}.row{display:flex;justify-content:space-between;gap:1em;align-items:baseline}
.name{font-weight:600}.label{font-size:1.35em;font-weight:700;margin:.2em 0}
.dot{display:inline-block;width:.7em;height:.7em;border-radius:50%;margin-right:.35em;background:var(--mut)}
.ok .dot{background:var(--ok)}.stale .dot{background:var(--bad)}
.bars div{margin:.25em 0}.bars .t{display:flex;justify-content:space-between;font-size:.9em}
.bars .b{height:.5em;background:#263039;border-radius:4px;overflow:hidden}.bars .b i{display:block;height:100%;background:var(--bar)}
.stats{color:var(--mut);font-size:.85em;margin-top:.4em}
section{padding:0 1em 1.5em}table{width:100%;border-collapse:collapse;font-size:.9em}
img.snap{height:3em;border-radius:3px;display:block}td,th{text-align:left;padding:.35em .4em;border-bottom:1px solid #263039}th{color:var(--mut);font-weight:500}
@media (max-width:520px){main{padding:.5em;gap:.6em}header{padding:.6em}.hide-s{display:none}}
</style></head>
<body>
<header><h1>edgefg live</h1><span id="model"></span><span id="mqtt"></span><span id="health"></span></header>
<main id="cams"></main>
<section><h2 style="font-size:1em">Last sightings</h2>
<table><thead><tr><th class="hide-s">best frame</th><th>camera</th><th>label</th><th>best</th><th class="hide-s">frames</th><th>started</th><th>ended</th></tr></thead>
<tbody id="sightings"><tr><td colspan="7">none yet</td></tr></tbody></table><div class="stats" id="counts"></div></section>
<section id="outputs"></section>
<script>
"use strict";
const token=new URLSearchParams(location.search).get("token");
const q=(p,extra)=>{const u=new URLSearchParams(extra||{});if(token)u.set("token",token);const s=u.toString();return p+(s?"?"+s:"")};
const esc=s=>String(s).replace(/[&<>"']/g,c=>({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
const fmtT=t=>t?new Date(t*1000).toLocaleTimeString():"";
const cards={};
const kv=o=>Object.entries(o||{}).filter(([k,v])=>v!==null&&typeof v!=="object").map(([k,v])=>`${esc(k.replace(/_/g," "))} ${esc(typeof v==="number"&&!Number.isInteger(v)?v.toFixed(3):v)}`).join(" · ");
function card(name){
  if(cards[name])return cards[name];
  const el=document.createElement("div");el.className="card";el.dataset.camera=name;
  el.innerHTML=`<img alt="camera ${esc(name)}" src="${q("/stream.mjpg",{camera:name})}"><div class="body">
  <div class="row"><span class="name"><span class="dot"></span>${esc(name)}</span><span class="age"></span></div>
  <div class="label">…</div><div class="bars"></div><div class="stats"></div><div class="stats out"></div></div>`;
  document.getElementById("cams").appendChild(el);return cards[name]=el;
}
async function tick(){
  let s;
  try{const r=await fetch(q("/api/state"),{cache:"no-store"});if(!r.ok)throw new Error(r.status);s=await r.json();}
  catch(e){document.getElementById("health").textContent="offline ("+e.message+")";return;}
  document.getElementById("model").textContent=`${s.info.name||""} · ${s.info.backend||""} ${s.info.precision||""}`;
  document.getElementById("health").textContent=s.health.status;
  document.getElementById("mqtt").textContent=s.mqtt?`MQTT ${s.mqtt.connected?"connected":"offline"} · spool ${s.mqtt.spool_depth}`:"";
  for(const [name,c] of Object.entries(s.cameras)){
    const el=card(name),r=c.latest,h=s.health.cameras[name]||{};
    el.className="card "+(h.ok?"ok":"stale");
    el.querySelector(".age").textContent=h.last_frame_age_s==null?"no frame yet":`${h.last_frame_age_s.toFixed(1)} s ago`;
    el.querySelector(".label").textContent=r?`${r.label} ${(r.score*100).toFixed(0)}%`:"waiting for frames";
    el.querySelector(".bars").innerHTML=r?r.top.map(t=>`<div><div class="t"><span>${esc(t.label)}</span><span>${(t.score*100).toFixed(1)}%</span></div><div class="b"><i style="width:${(t.score*100).toFixed(1)}%"></i></div></div>`).join(""):"";
    const st=c.stages_recent||{},p=st.processing||{},q=st.queue||{};
    el.querySelector(".out").innerHTML=Object.entries(s.outputs||{}).map(([n,o])=>o.cameras&&o.cameras[name]?`<div data-output="${esc(n)}">${esc(n)}: ${kv(o.cameras[name])}</div>`:"").join("");
    el.querySelector(".stats").textContent=`${c.fps_recent.toFixed(1)} FPS · latency p50 ${p.p50??"–"} ms p95 ${p.p95??"–"} ms${q.p50>=1?` (+ queued p50 ${q.p50} ms)`:""} · ${c.frames} frames · ${c.dropped} dropped · ${c.reconnects} reconnects`;
  }
  const rows=s.sightings.map(x=>`<tr><td class="hide-s">${x.snapshot?`<a href="${q("/snapshot.jpg",{sighting:x.id})}"><img class="snap" alt="best frame of ${esc(x.label)}" loading="lazy" src="${q("/snapshot.jpg",{sighting:x.id,v:x.best_score})}"></a>`:""}</td><td>${esc(x.camera)}</td><td>${esc(x.label)}</td><td>${(x.best_score*100).toFixed(0)}%</td><td class="hide-s">${x.frames}</td><td>${fmtT(x.start_time)}</td><td>${x.end_time?fmtT(x.end_time):"now"}</td></tr>`);
  document.getElementById("outputs").innerHTML=Object.entries(s.outputs||{}).map(([n,o])=>`<div class="stats" data-output="${esc(n)}"><b>${esc(n)}</b> ${kv(o.summary)}</div>`).join("");
  document.getElementById("sightings").innerHTML=rows.length?rows.join(""):'<tr><td colspan="7">none yet</td></tr>';
  document.getElementById("counts").textContent=Object.entries(s.counts||{}).filter(([n,c])=>c.total).map(([n,c])=>`${n}: ${c.total} sightings (${Object.entries(c.by_class).slice(0,5).map(([k,v])=>`${k} ${v}`).join(", ")})`).join(" · ");
}
tick();setInterval(tick,1000);
</script></body></html>
"""
