//! Progress of long CLI work on stderr: indicatif's bars on a terminal, a line now and then in
//! a log (where a bar would draw nothing), nothing with `--json`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use graft_kit::{Outcome, Progress};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Shows one bar per transfer while the kit is fetched.
pub struct KitProgress {
    bar: Mutex<Option<ProgressBar>>,
    quiet: bool,
}

impl KitProgress {
    /// `quiet` draws nothing (for `--json` output).
    pub fn new(quiet: bool) -> KitProgress {
        KitProgress {
            bar: Mutex::new(None),
            quiet,
        }
    }

    fn with_bar(&self, f: impl FnOnce(&mut Option<ProgressBar>)) {
        if let Ok(mut bar) = self.bar.lock() {
            f(&mut bar);
        }
    }
}

impl Progress for KitProgress {
    fn start(&self, name: &str, total: Option<u64>) {
        if self.quiet {
            return;
        }
        let bar = match total {
            Some(total) => ProgressBar::new(total),
            None => ProgressBar::no_length(),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{msg:40!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(name.to_owned());
        self.with_bar(|slot| {
            if let Some(old) = slot.replace(bar) {
                old.finish_and_clear();
            }
        });
    }

    fn advance(&self, bytes: u64) {
        self.with_bar(|slot| {
            if let Some(bar) = slot {
                bar.inc(bytes);
            }
        });
    }

    fn done(&self, id: &str, outcome: Outcome) {
        self.with_bar(|slot| {
            if let Some(bar) = slot.take() {
                bar.finish_and_clear();
            }
        });
        // Only news is worth a line: `graft models list` shows what was already there.
        if !self.quiet && outcome == Outcome::Installed {
            eprintln!("  {id}: {}", outcome.as_str());
        }
    }
}

/// Progress over a known number of steps. On a terminal, a bar on stderr; where stderr is
/// not one (a log file, CI, `nohup`), a plain line each tenth of the way (no closer than
/// [`LOG_EVERY`] to the last one, so short work writes none) with the bar's message, so a run
/// read from its log is not silent for its whole length; nothing when `quiet` (`--json`).
pub struct Steps {
    bar: ProgressBar,
    log: Option<Mutex<Log>>,
}

/// The least time between two lines in a log.
pub const LOG_EVERY: Duration = Duration::from_secs(5);

/// What the lines of a log need.
struct Log {
    label: String,
    what: String,
    total: u64,
    position: u64,
    /// Where this run began (a resumed one after 0): what the time left is reckoned from.
    began_at: u64,
    message: String,
    started: Instant,
    last_line: Instant,
}

impl Log {
    /// The line to write, at `now`, if `position` moved into another tenth of the way and
    /// the last line is old enough.
    fn moved(&mut self, position: u64, now: Instant) -> Option<String> {
        let tenth = |n: u64| (n * 10).checked_div(self.total).unwrap_or(0);
        let crossed = tenth(position) != tenth(self.position);
        self.position = position;
        if !crossed || now.saturating_duration_since(self.last_line) < LOG_EVERY {
            return None;
        }
        self.last_line = now;
        Some(self.line(now))
    }

    fn line(&self, now: Instant) -> String {
        let message = if self.message.is_empty() {
            String::new()
        } else {
            format!(", {}", self.message)
        };
        let what = if self.what.is_empty() {
            String::new()
        } else {
            format!(" {}", self.what)
        };
        let elapsed = now.saturating_duration_since(self.started).as_secs_f64();
        let done = self.position.saturating_sub(self.began_at);
        let left = self.total.saturating_sub(self.position);
        let eta = if done > 0 && left > 0 {
            let seconds = elapsed * left as f64 / done as f64;
            if seconds < 120.0 {
                format!(", about {seconds:.0} s left")
            } else {
                format!(", about {:.0} min left", seconds / 60.0)
            }
        } else {
            String::new()
        };
        format!(
            "{}: {}/{}{what}{message}, {elapsed:.0} s{eta}",
            self.label, self.position, self.total
        )
    }
}

impl Steps {
    /// `total` steps of `what` (`"steps"`, `"requests"`; may be empty), the lines of a log
    /// starting with `label` (`"train"`).
    pub fn new(total: u64, what: &str, label: &str, quiet: bool) -> Steps {
        if quiet {
            return Steps {
                bar: ProgressBar::hidden(),
                log: None,
            };
        }
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let now = Instant::now();
            let log = Log {
                label: label.to_owned(),
                what: what.to_owned(),
                total,
                position: 0,
                began_at: 0,
                message: String::new(),
                started: now,
                last_line: now,
            };
            return Steps {
                bar: ProgressBar::hidden(),
                log: Some(Mutex::new(log)),
            };
        }
        let bar = ProgressBar::new(total);
        bar.set_draw_target(ProgressDrawTarget::stderr());
        let template = format!("{label} [{{bar:40}}] {{pos}}/{{len}} {what} {{per_sec}} {{eta}} {{msg}}");
        if let Ok(style) = ProgressStyle::with_template(&template) {
            bar.set_style(style.progress_chars("=> "));
        }
        Steps { bar, log: None }
    }

    fn with_log(&self, f: impl FnOnce(&mut Log)) {
        if let Some(Ok(mut log)) = self.log.as_ref().map(Mutex::lock) {
            f(&mut log);
        }
    }

    /// `n` more steps done.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
        self.with_log(|log| {
            if let Some(line) = log.moved(log.position + n, Instant::now()) {
                eprintln!("{line}");
            }
        });
    }

    /// Where a resumed run starts; no line for it.
    pub fn set_position(&self, position: u64) {
        self.bar.set_position(position);
        self.with_log(|log| (log.position, log.began_at) = (position, position));
    }

    /// What the bar (and the next line of a log) says after the count.
    pub fn set_message(&self, message: String) {
        self.with_log(|log| log.message.clone_from(&message));
        self.bar.set_message(message);
    }

    /// Clears the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// One [`Steps`] at a time, each started as work moves to its next stage (the one before
/// finished), for progress reported through `&self`, from any thread.
#[derive(Default)]
pub struct Stages(Mutex<Option<Steps>>);

impl Stages {
    /// Finishes the stage in progress, if any, and shows `steps` instead.
    pub fn start(&self, steps: Steps) {
        if let Ok(mut slot) = self.0.lock() {
            if let Some(old) = slot.replace(steps) {
                old.finish();
            }
        }
    }

    /// `n` more steps of the stage in progress.
    pub fn inc(&self, n: u64) {
        if let Ok(slot) = self.0.lock() {
            if let Some(steps) = slot.as_ref() {
                steps.inc(n);
            }
        }
    }

    /// Finishes the stage in progress, if any.
    pub fn finish(&self) {
        if let Ok(mut slot) = self.0.lock() {
            if let Some(steps) = slot.take() {
                steps.finish();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(total: u64, started: Instant) -> Log {
        Log {
            label: "train".into(),
            what: "steps".into(),
            total,
            position: 0,
            began_at: 0,
            message: String::new(),
            started,
            last_line: started,
        }
    }

    #[test]
    fn a_log_gets_a_line_each_tenth_of_the_way() {
        let start = Instant::now();
        let mut log = log(400, start);
        let mut lines = Vec::new();
        for step in 1..=400u64 {
            log.message = format!("loss {step}");
            // A step every 3 seconds: each tenth of the way (40 steps) takes 2 minutes.
            if let Some(line) = log.moved(step, start + Duration::from_secs(3 * step)) {
                lines.push(line);
            }
        }
        assert_eq!(lines.len(), 10, "{lines:#?}");
        assert_eq!(lines[0], "train: 40/400 steps, loss 40, 120 s, about 18 min left");
        assert_eq!(lines[8], "train: 360/400 steps, loss 360, 1080 s, about 2 min left");
        assert_eq!(lines[9], "train: 400/400 steps, loss 400, 1200 s");
    }

    #[test]
    fn work_shorter_than_the_interval_writes_no_line() {
        let start = Instant::now();
        let mut log = log(10, start);
        log.what = String::new();
        let lines: Vec<String> = (1..=10u64)
            .filter_map(|n| log.moved(n, start + Duration::from_millis(400 * n)))
            .collect();
        assert!(lines.is_empty(), "{lines:?}");
        // Once the interval has passed, the next tenth writes one (no unit: none named).
        assert_eq!(log.moved(10, start + LOG_EVERY).as_deref(), None, "no tenth crossed");
        log.position = 0;
        assert_eq!(log.moved(5, start + LOG_EVERY).as_deref(), Some("train: 5/10, 5 s, about 5 s left"));
    }

    #[test]
    fn a_resumed_run_counts_from_where_it_starts() {
        let start = Instant::now();
        let mut log = log(100, start);
        (log.position, log.began_at) = (50, 50);
        assert_eq!(log.moved(51, start + LOG_EVERY), None, "still in the sixth tenth");
        // 10 steps in 5 s since it resumed: 40 more take 20 s.
        assert_eq!(
            log.moved(60, start + LOG_EVERY).as_deref(),
            Some("train: 60/100 steps, 5 s, about 20 s left")
        );
    }
}
