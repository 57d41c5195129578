//! Stop strings: an answer ends just before the first place one of them appears, and the
//! answer's end that could still turn out to begin one is held back until it cannot.
//!
//! mistralrs 0.8.1 checks stop strings before it adds a token's text, and streams each
//! token's text at once, so a stop string spelled by several tokens reached the client, with
//! one token more ("help" asked, "...to help with" answered). graft matches them itself on
//! the streamed text, as OpenAI and vLLM do: the stop string is never part of the answer.
//!
//! This module matches text; it must not know about tokens, requests or mistralrs.

/// The matcher for one answer.
#[derive(Debug)]
pub(crate) struct StopText {
    stops: Vec<String>,
    /// vLLM's `include_stop_str_in_output`: the stop string that ended the answer ends it.
    keep_stop: bool,
    /// Text received and not handed out yet: the answer's end that may begin a stop string.
    held: String,
}

impl StopText {
    /// A matcher for `stops`; `None` when there is nothing to match (empty strings are
    /// skipped: they would end every answer before it began).
    pub(crate) fn new(stops: &[String], keep_stop: bool) -> Option<StopText> {
        let stops: Vec<String> = stops.iter().filter(|s| !s.is_empty()).cloned().collect();
        (!stops.is_empty()).then_some(StopText {
            stops,
            keep_stop,
            held: String::new(),
        })
    }

    /// Takes the answer's next piece of text. Returns the text that can be handed out now,
    /// and whether a stop string ended the answer (the text is then all that comes before
    /// it, and the stop string itself when it is kept; of two at one place, the first
    /// given).
    pub(crate) fn push(&mut self, text: &str) -> (String, bool) {
        self.held.push_str(text);
        // Text handed out earlier held no stop string, nor the start of one (that was kept
        // back), so the first stop string lies wholly in `held`.
        let first = self
            .stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()).map(|at| (at, stop.len())))
            .min_by_key(|&(at, _)| at);
        if let Some((at, len)) = first {
            self.held.truncate(if self.keep_stop { at + len } else { at });
            return (std::mem::take(&mut self.held), true);
        }
        let keep = self.stops.iter().map(|stop| overlap(&self.held, stop)).max().unwrap_or(0);
        let ready = self.held.len() - keep;
        let text = self.held[..ready].to_owned();
        self.held.drain(..ready);
        (text, false)
    }

    /// The text still held back, at the answer's end (it ended without a stop string).
    pub(crate) fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Bytes of the longest end of `text` that is the start of `stop` (and not all of it).
fn overlap(text: &str, stop: &str) -> usize {
    (1..stop.len().min(text.len() + 1))
        .rev()
        .find(|&n| stop.is_char_boundary(n) && text.ends_with(&stop[..n]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text handed out for `pieces`, and whether a stop string ended it.
    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        run_keeping(stops, pieces, false)
    }

    fn run_keeping(stops: &[&str], pieces: &[&str], keep_stop: bool) -> (Vec<String>, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut matcher = StopText::new(&stops, keep_stop).unwrap();
        let mut out = Vec::new();
        for piece in pieces {
            let (text, stopped) = matcher.push(piece);
            out.push(text);
            if stopped {
                return (out, true);
            }
        }
        out.push(matcher.flush());
        (out, false)
    }

    #[test]
    fn a_stop_string_spelled_by_several_pieces_ends_the_answer_before_it() {
        // "help" in two pieces: " he" is held back until "lp" completes it.
        assert_eq!(
            run(&["help"], &["I am", " he", "lp", "ful"]),
            (vec!["I am".into(), " ".into(), "".into()], true)
        );
        // A piece that ends the stop string and goes on: the rest is dropped too.
        assert_eq!(
            run(&["\n\n"], &["fn a() {}\n", "\nfn b"]),
            (vec!["fn a() {}".into(), "".into()], true)
        );
        // Inside one piece.
        assert_eq!(run(&["brings"], &["What brings you"]), (vec!["What ".into()], true));
    }

    #[test]
    fn held_text_is_handed_out_once_it_cannot_begin_a_stop_string() {
        assert_eq!(
            run(&["help"], &["he", "llo", " hel", "d"]),
            (vec!["".into(), "hello".into(), " ".into(), "held".into(), "".into()], false)
        );
        // At the end, what is still held back comes out.
        assert_eq!(run(&["stop here"], &["we stop"]), (vec!["we ".into(), "stop".into()], false));
    }

    #[test]
    fn the_first_stop_string_in_the_text_wins_and_characters_are_never_split() {
        assert_eq!(run(&["c", "ab"], &["xabc"]), (vec!["x".into()], true));
        assert_eq!(run(&["bc", "abcd"], &["xab", "cd"]), (vec!["x".into(), "".into()], true));
        // "é" is two bytes: a partial match never cuts it.
        assert_eq!(
            run(&["éa"], &["caf", "é", "s"]),
            (vec!["caf".into(), "".into(), "és".into(), "".into()], false)
        );
        assert!(
            StopText::new(&[String::new()], false).is_none(),
            "an empty stop string matches nothing"
        );
    }

    #[test]
    fn a_kept_stop_string_ends_the_answer_and_nothing_after_it_comes() {
        assert_eq!(
            run_keeping(&["help"], &["I am", " he", "lp", "ful"], true),
            (vec!["I am".into(), " ".into(), "help".into()], true)
        );
        assert_eq!(
            run_keeping(&["\n\n"], &["fn a() {}\n", "\nfn b"], true),
            (vec!["fn a() {}".into(), "\n\n".into()], true)
        );
        // Of two at one place, the first given.
        assert_eq!(run_keeping(&["ab", "abc"], &["xabcd"], true), (vec!["xab".into()], true));
    }
}
