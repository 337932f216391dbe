-------------------------------------------------------------------------------
-- The map people open (issue 15): one self-contained HTML page
--
-- territory_map_html() returns a whole HTML document as text: territories
-- coloured by owner, customers as points coloured by their latest outcome,
-- hover tooltips, a legend, pan and zoom, and (with a realignment plan id) a
-- before/after toggle fed by allocation.realign_geojson(plan_id).  No network:
-- the renderer is ~300 lines of vanilla JavaScript inside the page (inline SVG,
-- an equirectangular projection scaled by cos(mid latitude)), and a Content
-- Security Policy forbids every fetch.
--
-- Data are read with the CALLER's rights (SECURITY INVOKER): territories
-- through territory_geojson(), customers from each managed table the caller may
-- SELECT (row-level security applies: a rep's page shows its own customers),
-- outcomes only when the caller may read allocation.followup and
-- allocation.deal (analysts, managers, admins); otherwise the holder status.
--
-- Escaping: the data travel as JSON inside <script type="application/json">
-- with <, > and & written as \u003c, \u003e, \u0026 (a territory named
-- "</script><img onerror=...>" stays a string); the title is HTML-escaped; the
-- script writes user data with textContent only; the CSP allows only the page's
-- own script, by its SHA-256, so an injected inline handler would not run.
-------------------------------------------------------------------------------

-- The managed tables a map can show: key, location, owner and name columns
-- (SECURITY DEFINER: reading the registry needs no grant; the customers
-- themselves are read by territory_map_html() with the caller's rights)
CREATE FUNCTION allocation.map_layers()
RETURNS TABLE (managed_id integer, tbl regclass, table_name text, key_column name, location_column name,
               owner_column name, name_column name, location_datum text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS
$$
    SELECT m.id, m.tbl, m.table_name, m.key_column, m.location_column, m.owner_column,
           (m.attributes ->> 'name')::name, m.location_datum
      FROM allocation.managed_table m
     WHERE m.active AND m.location_column IS NOT NULL
     ORDER BY m.id
$$;
COMMENT ON FUNCTION allocation.map_layers() IS 'The managed tables a map can show (active, with a location column): key, location, owner and name columns; the rows are read by territory_map_html() with the caller''s rights';

CREATE FUNCTION allocation.territory_map_html(title text DEFAULT 'Territories and customers',
                                              plan_id bigint DEFAULT NULL,
                                              max_customers integer DEFAULT 20000,
                                              max_bytes integer DEFAULT 16777216,
                                              simplify double precision DEFAULT 0)
RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS
$f$
DECLARE
    v_terr jsonb;
    v_reps jsonb;
    v_plan jsonb;
    v_cust jsonb := '[]';
    v_layers jsonb := '[]';
    v_rows jsonb;
    v_n integer;
    v_total integer := 0;
    v_idx integer := 0;
    v_outcomes boolean;
    v_name_expr text;
    v_outcome_sql text;
    v_outcome_join text := '';
    v_data text;
    v_page text;
    v_title text;
    l record;
    -- the page; the script's SHA-256 goes into the Content Security Policy
    v_css constant text := $css$
*{box-sizing:border-box}
html,body{margin:0;height:100%;font:14px/1.4 "Noto Sans CJK SC","WenQuanYi Micro Hei","Microsoft YaHei","PingFang SC",system-ui,sans-serif;color:#222;background:#f4f6f8}
header{padding:10px 16px 6px;background:#fff;border-bottom:1px solid #cfd8dc}
h1{margin:0;font-size:20px}
#sub{color:#555;font-size:12.5px}
main{display:flex;height:calc(100% - 64px)}
#wrap{position:relative;flex:1;min-width:0;background:#e8eef2;overflow:hidden}
#map{width:100%;height:100%;display:block;cursor:grab;user-select:none}
#map.drag{cursor:grabbing}
#map path.t{stroke:#fff;stroke-width:.8;vector-effect:non-scaling-stroke}
#map path.t:hover{stroke:#263238;stroke-width:2}
#map path.p{fill:none;stroke:#37474f;stroke-width:1.8;vector-effect:non-scaling-stroke;pointer-events:none}
#map path.chg{stroke:#000;stroke-width:2.6;vector-effect:non-scaling-stroke}
#map path.chg.before{fill:none;stroke-dasharray:6 4;pointer-events:none}
#map circle{stroke:#fff;stroke-width:.6;vector-effect:non-scaling-stroke}
#map g.dense circle{stroke-width:.25}
#map circle.mv{stroke:#000;stroke-width:1.6}
#tip{position:absolute;pointer-events:none;background:rgba(255,255,255,.96);border:1px solid #90a4ae;border-radius:5px;padding:6px 9px;font-size:12.5px;box-shadow:0 2px 6px rgba(0,0,0,.18);max-width:340px}
#tip b{display:block}
#zoom{position:absolute;right:10px;top:10px;display:flex;flex-direction:column;gap:4px}
#zoom button{width:30px;height:30px;font-size:16px;border:1px solid #90a4ae;background:#fff;border-radius:4px;cursor:pointer}
aside{width:320px;overflow:auto;background:#fff;border-left:1px solid #cfd8dc;padding:10px 14px}
aside h2{font-size:14px;margin:12px 0 6px}
.row{display:flex;align-items:center;gap:8px;margin:3px 0;font-size:12.5px}
.row .n{margin-left:auto;color:#555}
.sw{width:22px;height:13px;border:1px solid #b0bec5;flex:none}
.dot{width:11px;height:11px;border-radius:50%;flex:none;margin:0 5px}
.note{color:#666;font-size:11.5px;margin:6px 0}
#plan button{border:1px solid #607d8b;background:#fff;padding:4px 10px;border-radius:4px;cursor:pointer;margin-right:4px}
#plan button.on{background:#37474f;color:#fff}
#err{position:absolute;left:10px;top:10px;background:#ffebee;color:#b71c1c;border:1px solid #e57373;padding:8px;border-radius:4px}
$css$;
    v_js constant text := $js$
(function () {
'use strict';
var body = document.body;
function fail(msg) {
  body.setAttribute('data-status', 'error');
  body.setAttribute('data-error', String(msg));
  var e = document.getElementById('err');
  e.textContent = 'The map could not be drawn: ' + msg;
  e.hidden = false;
}
window.onerror = function (m, src, line) { fail(m + ' (line ' + line + ')'); };
var D = JSON.parse(document.getElementById('map-data').textContent);
var NS = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, parent) {
  var e = document.createElementNS(NS, tag);
  for (var k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}
function h(tag, text, parent, cls) {
  var e = document.createElement(tag);
  if (text !== null && text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  if (parent) parent.appendChild(e);
  return e;
}
function fmt(n) { return Number(n).toLocaleString('en-US'); }

// --- owners and their colours (golden-angle hues, as in demo/out/map.svg)
var repById = {}, repByCode = {};
D.reps.forEach(function (r, i) {
  var hue = Math.round(((i + 1) * 137.508) % 360), sat = 46 + 12 * ((i + 1) % 3);
  r.color = r.active ? 'hsl(' + hue + ',' + sat + '%,' + (70 + 7 * ((i + 1) % 2)) + '%)' : '#c9c9c9';
  r.dark = r.active ? 'hsl(' + hue + ',' + Math.min(sat + 20, 90) + '%,36%)' : '#757575';
  repById[r.id] = r; repByCode[r.code] = r;
});
var TEAM = '#cfd8e3', VACANT = '#efe6d2';
function repOf(v) {
  if (v === null || v === undefined) return null;
  return (typeof v === 'number' ? repById[v] : repByCode[v]) || null;
}
function ownerColor(rep, team) { return rep ? rep.color : (team ? TEAM : VACANT); }
function ownerText(rep, team) {
  if (rep) return rep.code + ' — ' + rep.name + (rep.active ? '' : ' (inactive)');
  if (team) return 'team ' + team;
  return 'nobody (vacant)';
}
var OUT = { deal: ['#1b7f3b', 'deal (成交)'], followup: ['#f9a825', 'followed up, no deal yet'],
            none: ['#546e7a', 'held, no outcome yet'], held: ['#424242', 'held by a rep'],
            pool: ['#d50000', 'public pool (公海)'] };

// --- projection: lon/lat -> SVG units, x scaled by cos(mid latitude)
var feats = (D.territories && D.territories.features) || [];
var bb = [Infinity, Infinity, -Infinity, -Infinity];
function ext(p) {
  if (p[0] < bb[0]) bb[0] = p[0]; if (p[1] < bb[1]) bb[1] = p[1];
  if (p[0] > bb[2]) bb[2] = p[0]; if (p[1] > bb[3]) bb[3] = p[1];
}
function walk(c, f) { if (typeof c[0] === 'number') f(c); else for (var i = 0; i < c.length; i++) walk(c[i], f); }
feats.forEach(function (f) { if (f.geometry) walk(f.geometry.coordinates, ext); });
if (!isFinite(bb[0])) D.customers.forEach(function (c) { ext([c[3], c[4]]); });
if (!isFinite(bb[0])) bb = [0, 0, 1, 1];
var padx = Math.max((bb[2] - bb[0]) * 0.03, 0.01), pady = Math.max((bb[3] - bb[1]) * 0.03, 0.01);
bb = [bb[0] - padx, bb[1] - pady, bb[2] + padx, bb[3] + pady];
var cosl = Math.cos((bb[1] + bb[3]) / 2 * Math.PI / 180);
var k = Math.min(1000 / ((bb[2] - bb[0]) * cosl), 1000 / (bb[3] - bb[1]));
var W = (bb[2] - bb[0]) * cosl * k, H = (bb[3] - bb[1]) * k;
function X(lon) { return (lon - bb[0]) * cosl * k; }
function Y(lat) { return (bb[3] - lat) * k; }
function ringPath(r) {
  var s = '';
  for (var i = 0; i < r.length; i++) s += (i ? 'L' : 'M') + X(r[i][0]).toFixed(2) + ' ' + Y(r[i][1]).toFixed(2);
  return s + 'Z';
}
function geomPath(g) {
  if (!g) return '';
  var polys = g.type === 'Polygon' ? [g.coordinates] : g.type === 'MultiPolygon' ? g.coordinates : [];
  var s = '';
  polys.forEach(function (p) { p.forEach(function (r) { s += ringPath(r); }); });
  return s;
}
function area(g) {
  var a = [Infinity, Infinity, -Infinity, -Infinity];
  if (g) walk(g.coordinates, function (p) { a[0] = Math.min(a[0], p[0]); a[1] = Math.min(a[1], p[1]);
                                         a[2] = Math.max(a[2], p[0]); a[3] = Math.max(a[3], p[1]); });
  return (a[2] - a[0]) * (a[3] - a[1]);
}

// --- the SVG: territories (largest first, parents as borders on top), customers, plan layer
var map = document.getElementById('map');
var view = { x: 0, y: 0, w: W, h: H };
map.setAttribute('viewBox', '0 0 ' + W.toFixed(2) + ' ' + H.toFixed(2));
var gT = svg('g', { id: 'territories' }, map), gP = svg('g', { id: 'parents' }, map),
    gPlanT = svg('g', { id: 'plan-territories' }, map), gC = svg('g', { id: 'customers' }, map),
    gPlanC = svg('g', { id: 'plan-customers' }, map);
var parents = {};
feats.forEach(function (f) { if (f.properties.parent) parents[f.properties.parent] = true; });
var byCode = {}, ownedBy = {}, drawn = 0;
var order = feats.map(function (f, i) { return i; })
                 .sort(function (a, b) { return area(feats[b].geometry) - area(feats[a].geometry) || a - b; });
var tPaths = {};
order.forEach(function (i) {
  var f = feats[i], p = f.properties, d = geomPath(f.geometry);
  byCode[p.code] = f;
  if (!d) return;
  var rep = repOf(p.owner_rep);
  if (parents[p.code]) {
    svg('path', { d: d, 'class': 'p' }, gP);
  } else {
    tPaths[p.code] = svg('path', { d: d, 'class': 't', fill: ownerColor(rep, p.owner_team), 'fill-rule': 'evenodd',
                                   'data-i': i }, gT);
    var key = rep ? 'r' + rep.id : (p.owner_team ? 'team' : 'vacant');
    ownedBy[key] = (ownedBy[key] || 0) + 1;
  }
  drawn++;
});
// dots shrink as customers get denser (3.8 units for a few hundred, 1.5 for 10,000+)
var R = Math.max(1.5, Math.min(3.8, 3.8 * Math.sqrt(600 / Math.max(D.customers.length, 1)))) * Math.max(W, H) / 1000,
    circles = [], counts = {};
if (D.customers.length > 3000) gC.setAttribute('class', 'dense');
D.customers.forEach(function (c, i) {
  var o = OUT[c[6]] ? c[6] : 'held';
  counts[o] = (counts[o] || 0) + 1;
  circles.push(svg('circle', { cx: X(c[3]).toFixed(2), cy: Y(c[4]).toFixed(2), r: R, fill: OUT[o][0], 'data-c': i }, gC));
});
map.setAttribute('data-rendered', String(drawn));
map.setAttribute('data-customers', String(circles.length));

// --- tooltip
var wrap = document.getElementById('wrap'), tip = document.getElementById('tip');
function showTip(ev, lines) {
  while (tip.firstChild) tip.removeChild(tip.firstChild);
  lines.forEach(function (l, j) { h(j ? 'span' : 'b', l, tip); if (j) h('br', null, tip); });
  tip.hidden = false;
  var r = wrap.getBoundingClientRect();
  var x = ev.clientX - r.left + 14, y = ev.clientY - r.top + 14;
  if (x + tip.offsetWidth > r.width) x = ev.clientX - r.left - tip.offsetWidth - 10;
  if (y + tip.offsetHeight > r.height) y = ev.clientY - r.top - tip.offsetHeight - 10;
  tip.style.left = x + 'px'; tip.style.top = y + 'px';
}
function territoryLines(p) {
  var rep = repOf(p.owner_rep);
  var l = [p.code + ' ' + (p.name || ''), 'owner: ' + ownerText(rep, p.owner_team),
           'holdings: ' + fmt(p.holdings) + ' held, ' + fmt(p.pool) + ' in the pool'];
  if (p.parent) l.push('inside: ' + p.parent);
  if (p.exclusive) l.push('locked (exclusive to its owner)');
  return l;
}
map.addEventListener('mousemove', function (ev) {
  if (dragging) return;
  var t = ev.target, i;
  if (t.hasAttribute('data-i')) {
    var f = feats[+t.getAttribute('data-i')], l = territoryLines(f.properties);
    var pc = planT[f.properties.code];
    if (pc) l.push('plan: ' + ownerText(repOf(pc.from), null) + ' → ' + ownerText(repOf(pc.to), null));
    showTip(ev, l);
  } else if (t.hasAttribute('data-c')) {
    var c = D.customers[+t.getAttribute('data-c')], rep = repOf(c[5]);
    var lay = D.layers[c[0]] || {};
    showTip(ev, [(c[2] || c[1]), lay.table + ' key ' + c[1], 'owner: ' + (rep ? ownerText(rep) : 'public pool'),
                 'latest outcome: ' + (OUT[c[6]] ? OUT[c[6]][1] : c[6]) + (c[7] ? ' (' + c[7].slice(0, 10) + ')' : '')]);
  } else if (t.hasAttribute('data-m')) {
    var m = planC[+t.getAttribute('data-m')];
    showTip(ev, [m.name || m.key || 'customer', (m.table ? m.table + ' key ' : 'key ') + m.key,
                 'moves: ' + ownerText(repOf(m.from), null).replace('nobody (vacant)', 'public pool') + ' → ' +
                 ownerText(repOf(m.to), null).replace('nobody (vacant)', 'public pool')].concat(m.reason ? ['why: ' + m.reason] : []));
  } else tip.hidden = true;
});
map.addEventListener('mouseleave', function () { tip.hidden = true; });

// --- pan and zoom (viewBox); customer dots keep their size on screen
var dragging = null;
function apply() {
  map.setAttribute('viewBox', [view.x, view.y, view.w, view.h].map(function (v) { return v.toFixed(3); }).join(' '));
  var r = R * view.w / W;
  circles.forEach(function (c) { c.setAttribute('r', r); });
  planCircles.forEach(function (c) { c.setAttribute('r', Math.max(r * 1.6, 3 * view.w / 1000)); });
}
function zoom(f, cx, cy) {
  var nw = Math.min(Math.max(view.w * f, W / 200), W * 2), g = nw / view.w;
  view.x = cx - (cx - view.x) * g; view.y = cy - (cy - view.y) * g; view.w = nw; view.h = view.h * g;
  apply();
}
function toMap(ev) {
  var r = map.getBoundingClientRect(), s = Math.max(view.w / r.width, view.h / r.height);
  var ox = (r.width * s - view.w) / 2, oy = (r.height * s - view.h) / 2;
  return [view.x - ox + (ev.clientX - r.left) * s, view.y - oy + (ev.clientY - r.top) * s, s];
}
map.addEventListener('wheel', function (ev) { ev.preventDefault(); var p = toMap(ev); zoom(ev.deltaY < 0 ? 0.8 : 1.25, p[0], p[1]); },
                     { passive: false });
map.addEventListener('mousedown', function (ev) { dragging = { x: ev.clientX, y: ev.clientY, vx: view.x, vy: view.y, s: toMap(ev)[2] };
                                                  map.classList.add('drag'); tip.hidden = true; });
window.addEventListener('mousemove', function (ev) {
  if (!dragging) return;
  view.x = dragging.vx - (ev.clientX - dragging.x) * dragging.s; view.y = dragging.vy - (ev.clientY - dragging.y) * dragging.s;
  apply();
});
window.addEventListener('mouseup', function () { dragging = null; map.classList.remove('drag'); });
document.getElementById('zin').addEventListener('click', function () { zoom(0.7, view.x + view.w / 2, view.y + view.h / 2); });
document.getElementById('zout').addEventListener('click', function () { zoom(1 / 0.7, view.x + view.w / 2, view.y + view.h / 2); });
document.getElementById('zreset').addEventListener('click', function () { view = { x: 0, y: 0, w: W, h: H }; apply(); });

// --- the realignment plan: a FeatureCollection of moved customers and changed territories
var planC = [], planT = {}, planCircles = [], planTPaths = [];
function pick(p, names) { for (var i = 0; i < names.length; i++) if (p[names[i]] !== undefined) return p[names[i]]; return null; }
var FROM = ['from_rep', 'before_rep', 'before_owner_rep', 'before_owner_team'], TO = ['to_rep', 'after_rep', 'after_owner_rep', 'after_owner_team'];
if (D.plan) {
  (D.plan.features || []).forEach(function (f) {
    var p = f.properties || {}, g = f.geometry;
    var kind = p.kind || (g && g.type === 'Point' ? 'customer' : 'territory');
    if (kind === 'customer') {
      if (!g || g.type !== 'Point') return;
      planC.push({ x: g.coordinates[0], y: g.coordinates[1], from: pick(p, FROM), to: pick(p, TO), key: p.key,
                   name: p.name, table: p.table || p.table_name, reason: p.reason || null });
    } else if (kind === 'territory') {
      var base = byCode[p.code];
      planT[p.code] = { from: pick(p, FROM), to: pick(p, TO), code: p.code,
                        after: geomPath(g) || (base ? geomPath(base.geometry) : ''),
                        before: (p.before_geometry ? geomPath(p.before_geometry) : '') || (base ? geomPath(base.geometry) : '') };
    }
  });
  planC.forEach(function (m, i) {
    planCircles.push(svg('circle', { cx: X(m.x).toFixed(2), cy: Y(m.y).toFixed(2), r: Math.max(R * 1.6, 3 * Math.max(W, H) / 1000), 'class': 'mv', 'data-m': i }, gPlanC));
  });
}
var mode = 'before';
function setMode(m) {
  if (!D.plan) return;
  mode = m;
  body.setAttribute('data-mode', m);
  while (gPlanT.firstChild) gPlanT.removeChild(gPlanT.firstChild);
  var nt = 0;
  Object.keys(planT).forEach(function (code) {
    var t = planT[code], d = m === 'after' ? t.after : t.before;
    if (!d) return;
    var base = byCode[code], i = base ? feats.indexOf(base) : -1;
    var attrs = { d: d, 'class': 'chg ' + m, 'fill-rule': 'evenodd' };
    if (m === 'after') attrs.fill = ownerColor(repOf(t.to), null);
    if (i >= 0 && m === 'after') attrs['data-i'] = i;
    svg('path', attrs, gPlanT);
    nt++;
  });
  planC.forEach(function (c, i) {
    var rep = repOf(m === 'after' ? c.to : c.from);
    planCircles[i].setAttribute('fill', rep ? rep.dark : OUT.pool[0]);
  });
  map.setAttribute('data-plan-territories', String(nt));
  map.setAttribute('data-plan-customers', String(planC.length));
  var bs = document.querySelectorAll('#plan button');
  for (var j = 0; j < bs.length; j++) bs[j].className = bs[j].getAttribute('data-mode') === m ? 'on' : '';
}

// --- the side panel: header line, plan, legend, notes
var sub = document.getElementById('sub');
sub.textContent = fmt(drawn) + ' territories · ' + fmt(circles.length) + ' customers · as seen by ' + D.viewer +
                  (D.viewer_rep ? ' (rep ' + D.viewer_rep + ')' : '') + ' · generated ' + D.generated_at;
var side = document.getElementById('side');
if (D.plan) {
  var pd = document.getElementById('plan');
  h('h2', 'Realignment plan ' + D.plan_id, pd);
  ['before', 'after'].forEach(function (m) {
    var b = h('button', m === 'before' ? 'Before (today)' : 'After the plan', pd);
    b.setAttribute('data-mode', m);
    b.addEventListener('click', function () { setMode(m); });
  });
  h('div', fmt(planC.length) + ' customers move, ' + fmt(Object.keys(planT).length) + ' territories change', pd, 'note');
  var net = {};
  planC.forEach(function (c) {
    var f = repOf(c.from), t = repOf(c.to);
    var fk = f ? f.code : '(pool)', tk = t ? t.code : '(pool)';
    net[fk] = net[fk] || [0, 0]; net[tk] = net[tk] || [0, 0];
    net[fk][0]++; net[tk][1]++;
  });
  Object.keys(net).sort().forEach(function (code) {
    var r = h('div', null, pd, 'row'), rep = repByCode[code];
    h('span', null, r, 'dot').style.background = rep ? rep.dark : OUT.pool[0];
    h('span', code + (rep ? ' ' + rep.name : ''), r);
    h('span', '−' + net[code][0] + ' +' + net[code][1], r, 'n');
  });
}
var lg = document.getElementById('legend');
h('h2', 'Territory owner', lg);
D.reps.forEach(function (r) {
  if (!ownedBy['r' + r.id]) return;
  var row = h('div', null, lg, 'row');
  h('span', null, row, 'sw').style.background = r.color;
  h('span', r.code + ' ' + r.name + (r.active ? '' : ' (inactive)'), row);
  h('span', fmt(ownedBy['r' + r.id]), row, 'n');
});
[['team', TEAM, 'owned by a team, no single rep'], ['vacant', VACANT, 'vacant: nobody owns it']].forEach(function (x) {
  if (!ownedBy[x[0]]) return;
  var row = h('div', null, lg, 'row');
  h('span', null, row, 'sw').style.background = x[1];
  h('span', x[2], row); h('span', fmt(ownedBy[x[0]]), row, 'n');
});
if (Object.keys(parents).length) {
  var row = h('div', null, lg, 'row');
  var s = h('span', null, row, 'sw'); s.style.background = '#fff'; s.style.border = '2px solid #37474f';
  h('span', 'border of a parent territory', row);
}
h('h2', D.outcomes ? 'Customers, by latest outcome' : 'Customers, by holder', lg);
(D.outcomes ? ['deal', 'followup', 'none', 'pool'] : ['held', 'pool']).forEach(function (o) {
  var row = h('div', null, lg, 'row');
  h('span', null, row, 'dot').style.background = OUT[o][0];
  h('span', OUT[o][1], row); h('span', fmt(counts[o] || 0), row, 'n');
});
if (D.plan) {
  var row2 = h('div', null, lg, 'row');
  var s2 = h('span', null, row2, 'dot'); s2.style.background = '#fff'; s2.style.border = '2px solid #000';
  h('span', 'a customer the plan moves (fill: owner before / after)', row2);
}
var nt = document.getElementById('notes');
if (!D.outcomes) h('div', 'Outcomes are not shown: your role may not read allocation.followup and allocation.deal.', nt, 'note');
D.layers.forEach(function (l) {
  h('div', l.table + ': ' + (l.note ? l.note : fmt(l.shown) + ' customers with a location'), nt, 'note');
});
h('div', 'Hover a territory or a customer; wheel or +/− to zoom, drag to pan.', nt, 'note');
setMode(/after/.test(location.hash) ? 'after' : 'before');
body.setAttribute('data-status', 'ok');
})();
$js$;
BEGIN
    IF title IS NULL OR max_customers IS NULL OR max_bytes IS NULL OR simplify IS NULL THEN
        RAISE EXCEPTION 'territory_map_html() needs a title, max_customers, max_bytes and simplify' USING ERRCODE = '22004',
              DETAIL = 'One of them is NULL (only plan_id may be NULL: no realignment plan).',
              HINT = 'SELECT allocation.territory_map_html(''Territories'');';
    END IF;
    IF length(title) > 200 THEN
        RAISE EXCEPTION 'map title is too long (% characters)', length(title) USING ERRCODE = 'LA0H0',
              DETAIL = 'The title of the page is at most 200 characters.', HINT = 'Pass a shorter title.';
    END IF;
    IF max_customers < 0 OR max_customers > 1000000 THEN
        RAISE EXCEPTION 'max_customers must be between 0 and 1000000, not %', max_customers USING ERRCODE = 'LA0H0',
              DETAIL = 'A browser draws about a million points at most; 0 draws territories only.',
              HINT = 'SELECT allocation.territory_map_html(''Territories'', max_customers => 50000);';
    END IF;
    IF max_bytes < 65536 OR max_bytes > 1000000000 THEN
        RAISE EXCEPTION 'max_bytes must be between 65536 and 1000000000, not %', max_bytes USING ERRCODE = 'LA0H0',
              DETAIL = 'The page is one text value: at least 64 kB (the renderer), at most 1 GB (a PostgreSQL text value).',
              HINT = 'SELECT allocation.territory_map_html(''Territories'', max_bytes => 50000000);';
    END IF;
    IF NOT (simplify >= 0 AND simplify <= 1) THEN
        RAISE EXCEPTION 'simplify must be between 0 and 1 degree, not %', simplify USING ERRCODE = 'LA0H0',
              DETAIL = 'simplify is the tolerance of ST_SimplifyPreserveTopology in degrees (0.001 is about 100 m); 0 keeps every vertex.',
              HINT = 'SELECT allocation.territory_map_html(''Territories'', simplify => 0.002);';
    END IF;

    -- the plan first: a wrong plan id fails before anything is read (realign_geojson()'s own
    -- errors pass through: LA0R1 unknown plan, LA0R0 a caller who may not see plans); the page
    -- draws what moves, not the customers that stay
    IF plan_id IS NOT NULL THEN
        v_plan := allocation.realign_geojson(plan_id);
        v_plan := jsonb_set(v_plan, '{features}', coalesce(
                      (SELECT jsonb_agg(x.f ORDER BY x.o) FROM jsonb_array_elements(v_plan -> 'features') WITH ORDINALITY AS x(f, o)
                        WHERE x.f -> 'properties' ->> 'outcome' IS DISTINCT FROM 'stays'), '[]'));
    END IF;

    -- territories, read like any client reads them (optionally simplified)
    v_terr := allocation.territory_geojson();
    IF simplify > 0 THEN
        SELECT jsonb_build_object('type', 'FeatureCollection', 'features', coalesce(jsonb_agg(
                   CASE WHEN s.g IS NULL THEN e.f ELSE jsonb_set(e.f, '{geometry}', s.g) END ORDER BY e.ord), '[]'))
          INTO v_terr
          FROM jsonb_array_elements(v_terr -> 'features') WITH ORDINALITY e(f, ord)
          LEFT JOIN LATERAL (SELECT ST_AsGeoJSON(ST_SimplifyPreserveTopology(t.geom, simplify), 6)::jsonb AS g
                               FROM allocation.territory t WHERE t.id = (e.f -> 'properties' ->> 'id')::bigint) s ON true;
    END IF;
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', r.id, 'code', r.code, 'name', r.name, 'active', r.active) ORDER BY r.id), '[]')
      INTO v_reps FROM allocation.rep r;

    -- customers: every managed table with a location the caller may read, with the caller's rights
    v_outcomes := has_table_privilege('allocation.followup', 'SELECT') AND has_table_privilege('allocation.deal', 'SELECT');
    v_outcome_sql := CASE WHEN v_outcomes THEN
        $o$CASE WHEN c.o IS NULL THEN 'pool'
                WHEN o.deal_at IS NOT NULL AND o.deal_at >= coalesce(o.fu_at, '-infinity') THEN 'deal'
                WHEN o.fu_at IS NOT NULL THEN 'followup' ELSE 'none' END,
           greatest(o.deal_at, o.fu_at)$o$
        ELSE $o$CASE WHEN c.o IS NULL THEN 'pool' ELSE 'held' END, NULL::timestamptz$o$ END;
    -- (the outcome tables appear in the query only when the caller may read them)
    IF v_outcomes THEN
        v_outcome_join := $o$
              LEFT JOIN LATERAL (
                    SELECT (SELECT greatest(max(d.at), (SELECT max(f.at) FROM allocation.followup f
                                                         WHERE f.managed_id = $2 AND f.key = c.k AND f.kind = 'deal'))
                              FROM allocation.deal d WHERE d.managed_id = $2 AND d.key = c.k) AS deal_at,
                           (SELECT max(f.at) FROM allocation.followup f
                             WHERE f.managed_id = $2 AND f.key = c.k AND f.kind <> 'deal') AS fu_at) o ON true$o$;
    END IF;
    FOR l IN SELECT * FROM allocation.map_layers() LOOP
        IF max_customers = 0 THEN
            v_layers := v_layers || jsonb_build_object('table', l.table_name, 'shown', 0,
                                                       'note', 'not drawn: max_customers => 0');
            v_idx := v_idx + 1;
            CONTINUE;
        END IF;
        IF NOT (has_column_privilege(l.tbl, l.key_column, 'SELECT') AND has_column_privilege(l.tbl, l.location_column, 'SELECT')
                AND has_column_privilege(l.tbl, l.owner_column, 'SELECT')
                AND (l.name_column IS NULL OR has_column_privilege(l.tbl, l.name_column, 'SELECT'))) THEN
            v_layers := v_layers || jsonb_build_object('table', l.table_name, 'shown', 0,
                                                       'note', 'not shown: your role may not read this table');
            v_idx := v_idx + 1;
            CONTINUE;
        END IF;
        v_name_expr := CASE WHEN l.name_column IS NULL THEN 'NULL::text' ELSE format('x.%I::text', l.name_column) END;
        EXECUTE format($q$
            SELECT count(*)::integer,
                   coalesce(jsonb_agg(jsonb_build_array($3, c.k, c.n, round(ST_X(c.p)::numeric, 6), round(ST_Y(c.p)::numeric, 6),
                                                        c.o, %6$s) ORDER BY c.k), '[]')
              FROM (SELECT y.k, y.n, y.o,
                           -- a GCJ-02 / BD-09 column: drawn where the engine places it (WGS 84)
                           CASE WHEN %8$L = 'wgs84' OR NOT (abs(ST_X(y.p)) <= 180 AND abs(ST_Y(y.p)) <= 90) THEN y.p
                                ELSE (SELECT ST_SetSRID(ST_MakePoint(d.lon, d.lat), 4326)
                                        FROM allocation.datum_convert(ST_X(y.p), ST_Y(y.p), %8$L, 'wgs84') d) END AS p
                      FROM (SELECT x.%1$I::text AS k, %4$s AS n, x.%3$I::bigint AS o,
                                   CASE WHEN ST_SRID(x.%2$I) IN (0, 4326) THEN x.%2$I ELSE ST_Transform(x.%2$I, 4326) END AS p
                              FROM %5$s x WHERE x.%2$I IS NOT NULL LIMIT $1) y) c
              %7$s$q$,
            l.key_column, l.location_column, l.owner_column, v_name_expr, l.tbl,
            v_outcome_sql, v_outcome_join, coalesce(l.location_datum, 'wgs84'))
          INTO v_n, v_rows USING max_customers - v_total + 1, l.managed_id, v_idx;
        v_total := v_total + v_n;
        IF v_total > max_customers THEN
            RAISE EXCEPTION 'more than % customers to draw', max_customers USING ERRCODE = 'LA0H1',
                  DETAIL = format('The managed tables you may read have more than %s customers with a location (%s reached it).',
                                  max_customers, l.table_name),
                  HINT = 'Pass a larger max_customers (up to 1000000), or 0 to draw the territories only.';
        END IF;
        v_cust := v_cust || v_rows;
        v_layers := v_layers || jsonb_build_object('table', l.table_name, 'shown', v_n);
        v_idx := v_idx + 1;
    END LOOP;

    -- the data as JSON inside the page: <, > and & escaped (no "</script>" can end the block)
    v_data := replace(replace(replace(jsonb_build_object(
                  'title', title, 'generated_at', to_char(now(), 'YYYY-MM-DD HH24:MI TZ'),
                  'viewer', current_user, 'viewer_rep', (SELECT r.code FROM allocation.rep r WHERE r.id = allocation.current_rep_id()),
                  'territories', v_terr, 'reps', v_reps, 'customers', v_cust, 'layers', v_layers,
                  'outcomes', v_outcomes, 'plan_id', plan_id, 'plan', v_plan)::text,
              '<', '\u003c'), '>', '\u003e'), '&', '\u0026');
    v_title := replace(replace(replace(replace(replace(title, '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '"', '&quot;'), '''', '&#39;');
    v_page := concat(
        E'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
        E'<meta name="viewport" content="width=device-width, initial-scale=1">\n',
        format(E'<meta http-equiv="Content-Security-Policy" content="default-src ''none''; style-src ''unsafe-inline''; script-src ''sha256-%s''; img-src data:">\n',
               encode(sha256(convert_to(v_js, 'UTF8')), 'base64')),
        E'<meta name="generator" content="allocation.territory_map_html()">\n',
        '<title>', v_title, E'</title>\n<style>', v_css, E'</style>\n</head>\n',
        E'<body data-status="loading">\n<header><h1>', v_title, E'</h1><div id="sub"></div></header>\n',
        E'<main><div id="wrap"><svg id="map" xmlns="http://www.w3.org/2000/svg" preserveAspectRatio="xMidYMid meet"></svg>\n',
        E'<div id="zoom"><button id="zin" title="zoom in">+</button><button id="zout" title="zoom out">−</button>',
        E'<button id="zreset" title="whole map">⌂</button></div>\n',
        E'<div id="tip" hidden></div><div id="err" hidden></div></div>\n',
        E'<aside id="side"><div id="plan"></div><div id="legend"></div><div id="notes"></div></aside></main>\n',
        '<script type="application/json" id="map-data">', v_data, E'</script>\n',
        '<script>', v_js, E'</script>\n</body>\n</html>\n');
    IF octet_length(v_page) > max_bytes THEN
        RAISE EXCEPTION 'the map page would be % bytes, more than max_bytes (%)', octet_length(v_page), max_bytes
              USING ERRCODE = 'LA0H2',
              DETAIL = format('%s territories and %s customers; territory outlines are most of it.',
                              jsonb_array_length(v_terr -> 'features'), v_total),
              HINT = 'Simplify the outlines (simplify => 0.002, about 200 m), or pass a larger max_bytes.';
    END IF;
    RETURN v_page;
END
$f$;
COMMENT ON FUNCTION allocation.territory_map_html(text, bigint, integer, integer, double precision) IS
'One self-contained HTML page (no network): territories coloured by owner, customers coloured by latest outcome (deal, follow-up, none, pool), tooltips, legend, pan/zoom, and with plan_id the realignment plan''s before/after toggle (the moves of realign_geojson(plan_id)); read with the caller''s rights; LA0H0-LA0H2';

-- territory_map_html() runs with the caller's rights and calls PostGIS: it gets
-- PostGIS's schema in its search_path, like territory_geojson() (90_privileges.sql)
DO $$
DECLARE
    postgis_schema name;
BEGIN
    SELECT n.nspname INTO postgis_schema FROM pg_catalog.pg_extension e
      JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'postgis';
    EXECUTE format('ALTER FUNCTION allocation.territory_map_html(text, bigint, integer, integer, double precision) SET search_path = pg_catalog, %I, pg_temp',
                   postgis_schema);
END
$$;
