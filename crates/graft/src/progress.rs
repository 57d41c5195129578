//! Progress bars for long CLI work (indicatif), drawn on stderr only when it is a terminal.

use std::sync::Mutex;

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

/// A bar over `total` steps of `what` on stderr, hidden when `quiet` (`--json`) or when
/// stderr is not a terminal.
pub fn bar(total: u64, what: &str, quiet: bool) -> ProgressBar {
    if quiet || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_draw_target(ProgressDrawTarget::stderr());
    let template = format!("[{{bar:40}}] {{pos}}/{{len}} {what} {{per_sec}} {{eta}} {{msg}}");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
