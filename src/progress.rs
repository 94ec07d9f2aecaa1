//! Progress bars of the long-running commands (`dev`, `batch`, `backfill`,
//! `loadgen`) on indicatif, drawn on stderr only when it is a terminal: in
//! logs and CI they stay silent, so no control characters end up in files.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Redraws per second at most; indicatif skips the draws in between.
const REDRAWS_PER_SEC: u8 = 10;

/// A bar of `done` out of `total` with a note, or a status line when no
/// total is known.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar, hidden unless stderr is a terminal.
    pub fn new() -> Progress {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr_with_hz(REDRAWS_PER_SEC)
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(
            ProgressStyle::with_template("[{bar:30}] {pos}/{len} {msg}")
                .expect("the template is valid")
                .progress_chars("## "),
        );
        Progress { bar }
    }

    /// A one-line status (no bar), hidden unless stderr is a terminal.
    pub fn line() -> Progress {
        let p = Progress::new();
        p.bar
            .set_style(ProgressStyle::with_template("{msg}").expect("the template is valid"));
        p
    }

    /// Whether anything is drawn (stderr is a terminal).
    pub fn visible(&self) -> bool {
        !self.bar.is_hidden()
    }

    pub fn draw(&mut self, done: u64, total: u64, note: &str) {
        self.bar.set_length(total);
        self.bar.set_position(done.min(total));
        self.bar.set_message(note.to_string());
    }

    /// Replaces the status line.
    pub fn say(&mut self, line: String) {
        self.bar.set_message(line);
        self.bar.tick();
    }

    /// Leaves the last state on screen and ends its line, so later output
    /// starts on a fresh one.
    pub fn finish(&mut self) {
        if !self.bar.is_finished() {
            self.bar.abandon();
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
