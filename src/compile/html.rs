//! One self-contained HTML page that steps through a compilation: the graph
//! before the passes and after every pass application that rewrote it, each
//! drawn as SVG (laid out by the `layout-rs` crate, so no Graphviz is needed)
//! with the nodes that pass created highlighted, the rewrites it applied
//! listed above it, and the table of rules (attempts, rewrites, time) beside
//! it. `kiln dump MODEL --html FILE` writes it.

use super::CompileOptions;
use crate::error::Result;
use crate::graph::dump::{numbering, to_text};
use crate::graph::Program;
use crate::passes::{Firing, PassReport};
use layout::backends::svg::SVGWriter;
use layout::core::base::Orientation;
use layout::core::color::Color;
use layout::core::style::StyleAttr;
use layout::std_shapes::render::get_shape_size;
use layout::std_shapes::shapes::{Arrow, Element, ShapeKind};
use layout::topo::layout::VisualGraph;
use std::collections::HashMap;
use std::fmt::Write;

/// Fill of a node the stage's pass created.
const NEW: u32 = 0xffd5_4fff;
/// Fill of the graph's interface and outputs.
const EDGE: u32 = 0xe3f2_fdff;

/// One step of the page: the graph after `pass` in `round` (`None`: the
/// input), drawn, with how many nodes it has.
struct Stage {
    pass: Option<(String, usize)>,
    svg: String,
    text: String,
    nodes: usize,
    new: usize,
}

/// The page for compiling `program` with `options`' pipeline, titled
/// `title`. `Err` if the pipeline fails (its error names the pass and rule).
pub fn report(program: &Program, options: &CompileOptions, title: &str) -> Result<String> {
    let mut p = program.clone();
    p.check()?;
    let mut stages = vec![stage(&p, None, usize::MAX, 0)];
    let mut seen = p.graph.next_seq();
    let report = options
        .pipeline()?
        .run_observed(&mut p, |pass, round, now| {
            let k = stages.len();
            stages.push(stage(now, Some((pass.to_string(), round)), seen, k));
            seen = now.graph.next_seq();
            Ok(())
        })?;
    Ok(page(title, &stages, &report))
}

/// Draws `p` with the nodes created at or after `since` highlighted, as
/// stage `k` of the page.
fn stage(p: &Program, pass: Option<(String, usize)>, since: usize, k: usize) -> Stage {
    let g = &p.graph;
    let (order, num) = numbering(g);
    let roots = p.roots();
    let dir = Orientation::TopToBottom;
    let mut vg = VisualGraph::new(dir);
    let mut handle = HashMap::new();
    let mut new = 0;
    for &n in &order {
        let node = &g.g[n.0];
        let fill = if node.seq >= since {
            new += 1;
            NEW
        } else if node.op.is_interface() || roots.contains(&n) {
            EDGE
        } else {
            0xffff_ffff
        };
        // compact: dump number, op, the id the rewrite list uses (`n12`),
        // shape; the attributes are in the text below
        let name = node.name.as_deref().filter(|_| node.op.is_interface());
        let label = format!(
            "%{} {}{}\nn{} {:?}",
            num[&n],
            node.op.name(),
            name.map_or(String::new(), |s| format!(" {s}")),
            node.seq,
            node.shape.dims()
        );
        let shape = ShapeKind::new_box(&label);
        let look = StyleAttr::new(Color::fast("black"), 1, Some(Color::new(fill)), 4, 12);
        let size = get_shape_size(dir, &shape, 12, false);
        handle.insert(n, vg.add_node(Element::create(shape, look, dir, size)));
    }
    for &n in &order {
        for o in g.operands(n) {
            vg.add_edge(Arrow::simple(""), handle[&o], handle[&n]);
        }
    }
    let mut svg = SVGWriter::new();
    vg.do_it(false, false, false, &mut svg);
    Stage {
        pass,
        svg: inline_svg(&svg.finalize(), k),
        text: to_text(g, &roots),
        nodes: order.len(),
        new,
    }
}

/// A standalone SVG document made fit to sit beside others in one page, as
/// stage `k`: no XML declaration, its ids (arrow markers) prefixed `sK-` so
/// each drawing refers to its own, and its style rules in a fixed order.
fn inline_svg(svg: &str, k: usize) -> String {
    let svg = svg.find("<svg").map_or(svg, |at| &svg[at..]);
    let mut svg = svg
        .replace("id=\"", &format!("id=\"s{k}-"))
        .replace("url(#", &format!("url(#s{k}-"))
        .replace("href=\"#", &format!("href=\"#s{k}-"));
    if let (Some(a), Some(b)) = (svg.find("<style>"), svg.find("</style>")) {
        let mut rules: Vec<&str> = svg[a + 7..b]
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        rules.sort_unstable();
        svg = format!("{}<style>\n{}\n{}", &svg[..a], rules.join("\n"), &svg[b..]);
    }
    svg
}

/// `s` with HTML's special characters escaped.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The firings of `pass` in `round`, one list item each.
fn firings_of(firings: &[Firing], pass: &str, round: usize) -> String {
    let mut s = String::new();
    for f in firings
        .iter()
        .filter(|f| f.pass == pass && f.round == round)
    {
        let _ = write!(
            s,
            "<li><b>#{}</b> <code>{}</code> matched [{}]: {}</li>",
            f.index,
            esc(f.rule),
            esc(&f.matched.join(", ")),
            esc(&f.changes.join(", "))
        );
    }
    s
}

/// The whole page.
fn page(title: &str, stages: &[Stage], report: &PassReport) -> String {
    let log = &report.log;
    let mut nav = String::new();
    let mut body = String::new();
    for (i, st) in stages.iter().enumerate() {
        let (label, heading, list) = match &st.pass {
            None => (
                "input".to_string(),
                format!("Before the passes: {} nodes", st.nodes),
                String::new(),
            ),
            Some((pass, round)) => (
                format!("{pass} (round {round})"),
                format!(
                    "After <code>{}</code>, round {round}: {} nodes, {} new (highlighted)",
                    esc(pass),
                    st.nodes,
                    st.new
                ),
                firings_of(&log.firings, pass, *round),
            ),
        };
        let pass = st.pass.as_ref().map_or("", |p| p.0.as_str());
        let _ = write!(nav, "<button data-i=\"{i}\">{i}. {}</button>", esc(&label));
        let _ = write!(
            body,
            "<section data-pass=\"{}\"><h2>{heading}</h2><ol class=\"firings\">{list}</ol>\
             <div class=\"svg fit\" title=\"click: zoom\">{}</div>\
             <details><summary>the graph as text (every attribute)</summary><pre>{}</pre></details></section>",
            esc(pass),
            st.svg,
            esc(&st.text)
        );
    }
    let mut table = String::from(
        "<table><tr><th>pass</th><th>rule</th><th>attempts</th><th>rewrites</th><th>µs</th></tr>",
    );
    for r in &log.rules {
        let _ = write!(
            table,
            "<tr data-pass=\"{}\" class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td></tr>",
            esc(r.pass),
            if r.applied == 0 { "never" } else { "" },
            esc(r.pass),
            esc(r.rule),
            r.attempts,
            r.applied,
            r.time.as_secs_f64() * 1e6
        );
    }
    table.push_str("</table>");
    format!(
        r##"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 0; }}
header {{ padding: 8px 16px; background: #263238; color: #fff; }}
header p {{ margin: 4px 0; }}
nav {{ display: flex; flex-wrap: wrap; gap: 4px; padding: 8px 16px; border-bottom: 1px solid #ccc; }}
nav button {{ font: inherit; cursor: pointer; border: 1px solid #999; background: #fafafa; border-radius: 4px; }}
nav button.on {{ background: #ffd54f; }}
main {{ display: flex; gap: 16px; padding: 0 16px; }}
#stages {{ flex: 1; min-width: 0; }}
section {{ display: none; }} section.on {{ display: block; }}
.svg {{ overflow: auto; border: 1px solid #ddd; max-height: 75vh; cursor: zoom-in; }}
.svg.fit svg {{ width: 100%; height: auto; }} .svg:not(.fit) {{ cursor: zoom-out; }}
pre {{ font-size: 12px; }}
ol.firings {{ font-size: 12px; max-height: 20vh; overflow: auto; }}
aside {{ width: 440px; font-size: 12px; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border-bottom: 1px solid #eee; padding: 2px 4px; text-align: left; }}
tr.never {{ color: #999; }} tr.cur {{ background: #fff3c4; }}
.key span {{ padding: 0 6px; border: 1px solid #999; }}
</style></head><body>
<header><h1 style="margin:0;font-size:20px">{title}</h1>
<p>{before} nodes before the passes, {after} after; {rewrites} rewrites in {rounds} round(s){stopped}. Step with the buttons or the ← → keys; click a graph to zoom.</p>
<p class="key"><span style="background:#ffd54f;color:#000">created by this pass</span> <span style="background:#e3f2fd;color:#000">input, parameter or output</span></p></header>
<nav>{nav}</nav>
<main><div id="stages">{body}</div>
<aside><h3>Rules (grey: never fired; highlighted: this pass)</h3>{table}</aside></main>
<script>
const s = document.querySelectorAll('section'), b = document.querySelectorAll('nav button'),
  rows = document.querySelectorAll('aside tr[data-pass]');
let cur = 0;
function show(i) {{
  cur = Math.max(0, Math.min(s.length - 1, i));
  s.forEach((e, k) => e.classList.toggle('on', k === cur));
  b.forEach((e, k) => e.classList.toggle('on', k === cur));
  const p = s[cur].dataset.pass;
  rows.forEach(r => r.classList.toggle('cur', p !== '' && r.dataset.pass === p));
}}
b.forEach(e => e.onclick = () => show(+e.dataset.i));
// click: 1:1 size, scrolled to the first node this pass created
function zoom(e) {{
  e.classList.toggle('fit');
  const r = e.querySelector('rect[fill="#ffd54fff"]');
  if (!r || e.classList.contains('fit')) return;
  const a = r.getBoundingClientRect(), c = e.getBoundingClientRect();
  e.scrollLeft += a.left - c.left - c.width / 2;
  e.scrollTop += a.top - c.top - c.height / 2;
}}
document.querySelectorAll('.svg').forEach(e => e.onclick = () => zoom(e));
document.onkeydown = e => {{ if (e.key === 'ArrowRight') show(cur + 1); if (e.key === 'ArrowLeft') show(cur - 1); }};
// `#3` opens stage 3, `#3z` opens it zoomed in
const h = location.hash.match(/^#(\d+)(z?)$/);
show(h ? +h[1] : 0);
if (h && h[2]) zoom(s[cur].querySelector('.svg'));
</script></body></html>
"##,
        title = esc(title),
        before = report.nodes_before,
        after = report.nodes_after,
        rewrites = log.applied(),
        rounds = report.iterations,
        stopped = if log.stopped {
            ", then stopped: the rewrite budget (--stop-after) was spent"
        } else {
            ""
        },
    )
}
