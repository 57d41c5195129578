//! The report as one HTML page a person would rather read than JSON: what was run, a chart of
//! each measure per arm with its 95% interval, each arm's difference from the first with its
//! paired interval, the judged questions, the notes, which arm to serve, and every task's
//! target beside each arm's answer (the tokens that differ from the target marked, the
//! retrieved files listed).
//!
//! The page is self-contained (inline CSS and SVG, no script, nothing fetched), so it opens
//! from disk and can be attached to a review. It only presents a [`Report`]; it computes no
//! figure of its own.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::golden::Task;
use crate::report::{metric, Interval, Report, METRICS};

/// The page for `report`; `tasks` gives each task's target, question and reference.
pub fn page(report: &Report, tasks: &[&Task]) -> String {
    let by_id: BTreeMap<&str, &Task> = tasks.iter().map(|t| (t.id.as_str(), *t)).collect();
    let mut out = String::new();
    let title = report.about.get("golden set").map_or("golden set".to_owned(), |g| g.clone());
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>graft eval: {}</title>\n<style>{STYLE}</style></head><body>\n<h1>graft eval <span class=\"dim\">{}</span></h1>\n",
        escape(&title),
        escape(&title)
    );
    about(&mut out, report);
    summary(&mut out, report);
    charts(&mut out, report);
    judged(&mut out, report);
    if !report.notes.is_empty() {
        sentences(&mut out, "Notes", &report.notes);
    }
    if let Some(serve) = &report.serve {
        sentences(&mut out, &format!("To serve: {}", serve.arm), &serve.reasons);
    }
    completions(&mut out, report, &by_id);
    questions(&mut out, report, &by_id);
    out.push_str("</body></html>\n");
    out
}

/// A heading and a list of sentences under it.
fn sentences(out: &mut String, title: &str, items: &[String]) {
    let _ = write!(out, "<h2>{}</h2><ul class=\"notes\">", escape(title));
    for item in items {
        let _ = write!(out, "<li>{}</li>", escape(item));
    }
    out.push_str("</ul>\n");
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1100px;color:#1b1f24;padding:0 16px}
h1{font-size:22px;margin:0 0 12px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.dim{color:#656d76;font-weight:normal}td span.dim{white-space:nowrap}table{border-collapse:collapse;margin:6px 0}
td,th{padding:3px 10px;border-bottom:1px solid #eaeef2;text-align:right;vertical-align:top}
th{background:#f6f8fa}td:first-child,th:first-child{text-align:left}
.about td{text-align:left}.about td:first-child{color:#656d76}
.better{color:#1a7f37;font-weight:600}.worse{color:#cf222e;font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:18px}.chart{border:1px solid #d0d7de;border-radius:6px;padding:8px}
.chart h3{font-size:13px;margin:0 0 4px}
pre{margin:2px 0;padding:4px 6px;background:#f6f8fa;border-radius:4px;white-space:pre-wrap;word-break:break-all;font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace}
details{border:1px solid #d0d7de;border-radius:6px;margin:6px 0;padding:4px 8px}
summary{cursor:pointer}summary .tag{display:inline-block;min-width:5.5em;padding:0 6px;margin-left:4px;border-radius:10px;font-size:12px;text-align:center}
.hit{background:#dafbe1;color:#116329}.miss{background:#ffebe9;color:#a40e26}.err{background:#fff8c5;color:#7d4e00}
mark{background:#ffd8d3;color:inherit;border-radius:2px}
.answers{width:100%}.answers td{text-align:left}.answers td:first-child{width:90px}.answers td.score{text-align:right;white-space:nowrap;color:#656d76;font-size:12px}
.sources{color:#656d76;font-size:12px}.notes li{margin:4px 0}
";

fn about(out: &mut String, report: &Report) {
    if report.about.is_empty() {
        return;
    }
    out.push_str("<table class=\"about\">");
    for (key, value) in &report.about {
        let _ = write!(out, "<tr><td>{}</td><td>{}</td></tr>", escape(key), escape(value));
    }
    out.push_str("</table>\n");
}

fn summary(out: &mut String, report: &Report) {
    if report.arms.iter().all(|a| a.all.tasks == 0) {
        return;
    }
    out.push_str("<h2>Completion tasks</h2><table><tr><th>arm</th><th>tasks</th>");
    for name in report.measures() {
        let _ = write!(out, "<th>{}</th>", label(name));
    }
    out.push_str("<th>cross-file EM</th><th>p50 latency</th><th>errors</th></tr>");
    for arm in &report.arms {
        let _ = write!(out, "<tr><td>{}</td><td>{}</td>", escape(arm.arm), arm.all.tasks);
        for name in report.measures() {
            match arm.intervals.get(name) {
                Some(i) => {
                    let _ = write!(
                        out,
                        "<td>{:.3} <span class=\"dim\">[{:.3}, {:.3}]</span></td>",
                        i.difference, i.low, i.high
                    );
                }
                None => out.push_str("<td>-</td>"),
            }
        }
        let cross = if arm.cross_file.tasks == 0 {
            "-".to_owned()
        } else {
            format!("{:.3} ({} tasks)", arm.cross_file.exact_match, arm.cross_file.tasks)
        };
        let _ = write!(
            out,
            "<td>{cross}</td><td>{:.0} ms</td><td>{}</td></tr>",
            arm.latency_ms_p50, arm.errors
        );
    }
    out.push_str("</table>\n");
    if report.comparisons.is_empty() {
        return;
    }
    out.push_str("<table><tr><th>difference (paired bootstrap, 95%)</th>");
    for name in report.measures() {
        let _ = write!(out, "<th>{}</th>", label(name));
    }
    out.push_str("</tr>");
    let rows = report
        .comparisons
        .iter()
        .flat_map(|c| [(c, &c.metrics, ""), (c, &c.cross_file, ", cross-file tasks")])
        .filter(|(_, intervals, _)| !intervals.is_empty());
    for (c, intervals, title) in rows {
        let _ = write!(out, "<tr><td>{} − {}{title}</td>", escape(c.arm), escape(c.against));
        for name in report.measures() {
            match intervals.get(name) {
                Some(i) => {
                    let _ = write!(
                        out,
                        "<td class=\"{}\">{:+.3} <span class=\"dim\">[{:+.3}, {:+.3}]</span></td>",
                        verdict_class(i.verdict),
                        i.difference,
                        i.low,
                        i.high
                    );
                }
                None => out.push_str("<td>-</td>"),
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>\n");
}

/// One chart per measure (each arm's mean and interval on 0..1), and one of the differences.
fn charts(out: &mut String, report: &Report) {
    let arms: Vec<(&str, &BTreeMap<&'static str, Interval>)> = report
        .arms
        .iter()
        .filter(|a| a.all.tasks > 0)
        .map(|a| (a.arm, &a.intervals))
        .collect();
    if arms.is_empty() {
        return;
    }
    out.push_str("<div class=\"charts\">");
    for name in METRICS {
        let rows: Vec<(&str, Option<&Interval>)> = arms.iter().map(|(arm, i)| (*arm, i.get(name))).collect();
        let _ = write!(out, "<div class=\"chart\"><h3>{} per arm (95% interval)</h3>", label(name));
        bars(out, &rows, 0.0, 1.0);
        out.push_str("</div>");
    }
    for c in &report.comparisons {
        let rows: Vec<(&str, Option<&Interval>)> = METRICS.iter().map(|m| (label(m), c.metrics.get(m))).collect();
        let reach = rows
            .iter()
            .filter_map(|(_, i)| *i)
            .flat_map(|i| [i.low.abs(), i.high.abs(), i.difference.abs()])
            .fold(0.05f64, f64::max);
        let reach = (reach * 20.0).ceil() / 20.0;
        let _ = write!(
            out,
            "<div class=\"chart\"><h3>{} − {} (paired, 95%)</h3>",
            escape(c.arm),
            escape(c.against)
        );
        bars(out, &rows, -reach, reach);
        out.push_str("</div>");
    }
    out.push_str("</div>\n");
}

/// Horizontal bars from `zero` (0, or the middle of a difference chart) to each value, with
/// the interval as a whisker; a bar is green or red when its interval excludes zero.
fn bars(out: &mut String, rows: &[(&str, Option<&Interval>)], min: f64, max: f64) {
    let (label_w, plot_w, row_h) = (110.0, 300.0, 24.0);
    let height = rows.len() as f64 * row_h + 22.0;
    let x = |v: f64| label_w + (v.clamp(min, max) - min) / (max - min) * plot_w;
    let zero = x(0.0);
    let _ = write!(
        out,
        "<svg width=\"{}\" height=\"{height}\" role=\"img\" font-size=\"11\" font-family=\"system-ui,sans-serif\">",
        label_w + plot_w + 60.0
    );
    for (row, (name, interval)) in rows.iter().enumerate() {
        let y = row as f64 * row_h + 4.0;
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            label_w - 6.0,
            y + 13.0,
            escape(name)
        );
        let Some(i) = interval else { continue };
        let colour = match (min < 0.0, i.verdict) {
            (true, "better") => "#2da44e",
            (true, "worse") => "#cf222e",
            (true, _) => "#8c959f",
            (false, _) => "#54aeff",
        };
        let (left, right) = if x(i.difference) < zero {
            (x(i.difference), zero)
        } else {
            (zero, x(i.difference))
        };
        let _ = write!(
            out,
            "<rect x=\"{left:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"14\" fill=\"{colour}\" opacity=\"0.75\"/>",
            y + 2.0,
            (right - left).max(1.0)
        );
        let (lo, hi, mid) = (x(i.low), x(i.high), y + 9.0);
        let _ = write!(
            out,
            "<path d=\"M{lo:.1} {mid:.1}H{hi:.1}M{lo:.1} {:.1}V{:.1}M{hi:.1} {:.1}V{:.1}\" stroke=\"#1b1f24\" stroke-width=\"1.2\"/>",
            mid - 5.0,
            mid + 5.0,
            mid - 5.0,
            mid + 5.0
        );
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            label_w + plot_w + 6.0,
            y + 13.0,
            if min < 0.0 {
                format!("{:+.3}", i.difference)
            } else {
                format!("{:.3}", i.difference)
            }
        );
    }
    let axis_y = rows.len() as f64 * row_h + 6.0;
    let _ = write!(
        out,
        "<path d=\"M{label_w} {axis_y}H{}\" stroke=\"#8c959f\"/><path d=\"M{zero:.1} 2V{axis_y}\" stroke=\"#8c959f\" stroke-dasharray=\"3 2\"/>",
        label_w + plot_w
    );
    for v in [min, (min + max) / 2.0, max] {
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#656d76\">{}</text>",
            x(v),
            axis_y + 13.0,
            if min < 0.0 { format!("{v:+.2}") } else { format!("{v:.1}") }
        );
    }
    out.push_str("</svg>");
}

fn judged(out: &mut String, report: &Report) {
    if report.judged.is_empty() {
        return;
    }
    out.push_str("<h2>Judged questions</h2><p class=\"dim\">Each pair is asked in both orders; a win or a loss counts only when both orders agree, a tie otherwise.</p><table><tr><th>pair</th><th>questions</th><th>wins</th><th>losses</th><th>ties</th><th>no verdict</th><th>flip rate</th><th>score (95%)</th></tr>");
    for j in &report.judged {
        let _ = write!(
            out,
            "<tr><td>{} vs {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td class=\"{}\">{:+.3} <span class=\"dim\">[{:+.3}, {:+.3}]</span></td></tr>",
            escape(j.arm),
            escape(j.against),
            j.pairs,
            j.wins,
            j.losses,
            j.ties,
            j.unreadable,
            j.flip_rate,
            verdict_class(j.verdict),
            j.score,
            j.low,
            j.high
        );
    }
    out.push_str("</table>\n");
}

fn completions(out: &mut String, report: &Report, tasks: &BTreeMap<&str, &Task>) {
    if report.outcomes.is_empty() {
        return;
    }
    let mut by_task: BTreeMap<&str, Vec<&crate::report::Outcome>> = BTreeMap::new();
    for o in &report.outcomes {
        by_task.entry(o.task.as_str()).or_default().push(o);
    }
    let _ = writeln!(
        out,
        "<h2>Tasks <span class=\"dim\">({}; the tokens of an answer that the target does not have are marked)</span></h2>",
        by_task.len()
    );
    for (id, outcomes) in by_task {
        let task = tasks.get(id);
        let target = task.and_then(|t| t.target.as_deref()).unwrap_or_default();
        let first = outcomes[0];
        let _ = write!(
            out,
            "<details><summary><b>{}</b> {}{} <span class=\"dim\">{}</span>",
            escape(id),
            escape(first.kind),
            if first.cross_file { " (cross-file)" } else { "" },
            escape(task.and_then(|t| t.path.as_deref()).unwrap_or_default())
        );
        for o in &outcomes {
            let class = if o.error.is_some() {
                "err"
            } else if metric(o, "exact_match") > 0.0 {
                "hit"
            } else {
                "miss"
            };
            let _ = write!(out, "<span class=\"tag {class}\">{}</span>", escape(o.arm));
        }
        out.push_str("</summary>");
        if let Some(task) = task {
            let before = crate::build::last_lines(task.prefix.as_deref().unwrap_or_default(), 6);
            let _ = write!(out, "<div class=\"dim\">before the cursor</div><pre>{}</pre>", escape(before));
            if let (Some(symbol), Some(defined_in)) = (&task.symbol, &task.defined_in) {
                let _ = write!(
                    out,
                    "<div class=\"dim\">uses <code>{}</code> from {}</div>",
                    escape(symbol),
                    escape(defined_in)
                );
            }
        }
        let _ = write!(
            out,
            "<div class=\"dim\">target</div><pre>{}</pre><table class=\"answers\">",
            escape(target)
        );
        for o in &outcomes {
            let answer = match &o.error {
                Some(e) => format!("<i>error: {}</i>", escape(e)),
                None if o.answer.is_empty() => "<i class=\"dim\">(an empty answer)</i>".to_owned(),
                None => marked(&o.answer, target),
            };
            let sources = if o.sources.is_empty() {
                String::new()
            } else {
                format!("<div class=\"sources\">retrieved: {}</div>", escape(&o.sources.join(", ")))
            };
            let _ = write!(
                out,
                "<tr><td>{}</td><td><pre>{answer}</pre>{sources}</td><td class=\"score\">EM {:.0} · ES {:.2} · ID-F1 {:.2}<br>{:.0} ms</td></tr>",
                escape(o.arm),
                o.exact_match,
                o.edit_similarity,
                o.identifier_f1,
                o.latency_ms
            );
        }
        out.push_str("</table></details>\n");
    }
}

fn questions(out: &mut String, report: &Report, tasks: &BTreeMap<&str, &Task>) {
    if report.answers.is_empty() {
        return;
    }
    let mut by_task: BTreeMap<&str, Vec<&crate::report::Answer>> = BTreeMap::new();
    for a in &report.answers {
        by_task.entry(a.task.as_str()).or_default().push(a);
    }
    let _ = writeln!(out, "<h2>Questions <span class=\"dim\">({})</span></h2>", by_task.len());
    for (id, answers) in by_task {
        let task = tasks.get(id);
        let _ = write!(
            out,
            "<details><summary><b>{}</b> {}</summary><div class=\"dim\">reference</div><pre>{}</pre><table class=\"answers\">",
            escape(id),
            escape(task.and_then(|t| t.question.as_deref()).unwrap_or_default()),
            escape(task.and_then(|t| t.reference.as_deref()).unwrap_or_default())
        );
        for a in &answers {
            let text = match &a.error {
                Some(e) => format!("<i>error: {}</i>", escape(e)),
                None => escape(&a.answer),
            };
            let sources = if a.sources.is_empty() {
                String::new()
            } else {
                format!("<div class=\"sources\">retrieved: {}</div>", escape(&a.sources.join(", ")))
            };
            let _ = write!(
                out,
                "<tr><td>{}</td><td><pre>{text}</pre>{sources}</td><td class=\"score\">{:.0} ms</td></tr>",
                escape(a.arm),
                a.latency_ms
            );
        }
        out.push_str("</table>");
        for j in report.judgements.iter().filter(|j| j.task == id) {
            let _ = write!(
                out,
                "<div class=\"dim\">judge, {} vs {}: {:?} ({} first: {}; {} second: {}){}</div>",
                escape(j.arm),
                escape(j.against),
                j.outcome,
                escape(j.arm),
                escape(first_line(&j.replies[0])),
                escape(j.arm),
                escape(first_line(&j.replies[1])),
                if j.flipped { " — flipped with the order" } else { "" }
            );
        }
        out.push_str("</details>\n");
    }
}

fn first_line(text: &str) -> &str {
    let line = text.trim().lines().next().unwrap_or_default();
    match line.char_indices().nth(120) {
        Some((at, _)) => &line[..at],
        None => line,
    }
}

fn label(metric: &str) -> &'static str {
    match metric {
        "exact_match" => "exact match",
        "edit_similarity" => "edit similarity",
        "identifier_match" => "identifier EM",
        "identifier_f1" => "identifier F1",
        _ => "reference log-prob/token",
    }
}

fn verdict_class(verdict: &str) -> &'static str {
    match verdict {
        "better" => "better",
        "worse" => "worse",
        _ => "",
    }
}

/// `answer` escaped, its tokens outside the longest common token sequence with `target`
/// marked.
fn marked(answer: &str, target: &str) -> String {
    let a = tokens(answer);
    let b = tokens(target);
    // Past this size the table would be large; the answer is shown unmarked.
    if a.len() * b.len() > 4_000_000 {
        return escape(answer);
    }
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    let mut open = false;
    while i < a.len() {
        let keep = j < b.len() && a[i] == b[j];
        if keep {
            j += 1;
        } else if j < b.len() && lcs[i][j + 1] > lcs[i + 1][j] {
            j += 1;
            continue;
        }
        match (keep, open) {
            (false, false) => {
                out.push_str("<mark>");
                open = true;
            }
            (true, true) => {
                out.push_str("</mark>");
                open = false;
            }
            _ => {}
        }
        out.push_str(&escape(a[i]));
        i += 1;
    }
    if open {
        out.push_str("</mark>");
    }
    out
}

/// Words, runs of white space, and single other characters.
fn tokens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let class = |c: char| {
        if c.is_alphanumeric() || c == '_' {
            0
        } else if c.is_whitespace() {
            1
        } else {
            2
        }
    };
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (k, &(_, c)) in chars.iter().enumerate() {
        let next = chars.get(k + 1);
        let ends = match next {
            None => true,
            Some(&(_, n)) => class(c) == 2 || class(n) != class(c),
        };
        if ends {
            let end = next.map_or(text.len(), |&(i, _)| i);
            out.push(&text[start..end]);
            start = end;
        }
    }
    out
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arms::Arm;
    use crate::golden::TaskKind;
    use crate::report::{report, Outcome, Results};

    #[test]
    fn tokens_that_differ_from_the_target_are_marked_and_text_is_escaped() {
        assert_eq!(tokens("let x = a<b;"), ["let", " ", "x", " ", "=", " ", "a", "<", "b", ";"]);
        assert_eq!(marked("let x = f(1);", "let x = f(1);"), "let x = f(1);");
        assert_eq!(marked("let y = f(1);", "let x = f(1);"), "let <mark>y</mark> = f(1);");
        assert_eq!(marked("a <b> c", "a c"), "a <mark>&lt;b&gt; </mark>c");
        assert_eq!(escape("\"<&>'"), "&quot;&lt;&amp;&gt;&#39;");
    }

    #[test]
    fn the_page_holds_every_arm_chart_and_task() {
        let mut task = Task::completion(TaskKind::Api, "src/a.rs", "fn f() {\n    ", "let v = vault.rotate();", "\n}");
        task.id = "api-0001".into();
        task.defined_in = Some("src/vault.rs".into());
        task.symbol = Some("rotate".into());
        let outcomes = vec![
            Outcome::new(&task, Arm::Base, Ok("let v = <script>;".into()), 12.0, vec![]),
            Outcome::new(
                &task,
                Arm::Rag,
                Ok("let v = vault.rotate();".into()),
                30.0,
                vec!["src/vault.rs".into()],
            ),
        ];
        let mut r = report(
            &[Arm::Base, Arm::Rag],
            Results {
                outcomes,
                ..Results::default()
            },
            1,
        );
        r.about.insert("golden set", "eval/x.golden.jsonl".into());
        let html = page(&r, &[&task]);
        assert!(html.starts_with("<!doctype html>") && html.ends_with("</html>\n"));
        assert_eq!(html.matches("<svg").count(), 5, "four measures and one difference chart");
        assert!(html.contains("api-0001") && html.contains("retrieved: src/vault.rs"));
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"), "answers are escaped");
        assert!(html.contains("<span class=\"tag hit\">rag</span>"));
        assert!(html.contains("<span class=\"tag miss\">base</span>"));
        assert!(html.contains("rag − base"));
    }
}
