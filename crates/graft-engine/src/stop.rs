//! Stop strings: an answer ends just before the first place one of them appears, and the
//! answer's end that could still turn out to begin one is held back until it cannot. Stop
//! tokens (vLLM's `stop_token_ids`): an answer ends just before the first one.
//!
//! mistralrs 0.8.1 checks stop strings before it adds a token's text, and streams each
//! token's text at once, so a stop string spelled by several tokens reached the client, with
//! one token more ("help" asked, "...to help with" answered). graft matches them itself on
//! the streamed text, as OpenAI and vLLM do: the stop string is never part of the answer.
//!
//! This module matches text and token ids; it must not know about requests or mistralrs.

/// The stop strings' matcher for one answer's text (the engine's, on the streamed text; chat's
/// tool replies use one on a reply's words).
#[derive(Debug)]
pub struct StopText {
    stops: Vec<String>,
    /// vLLM's `include_stop_str_in_output`: the stop string that ended the answer ends it.
    keep_stop: bool,
    /// Text received and not handed out yet: the answer's end that may begin a stop string.
    held: String,
}

impl StopText {
    /// A matcher for `stops`; `None` when there is nothing to match (empty strings are
    /// skipped: they would end every answer before it began).
    pub fn new(stops: &[String], keep_stop: bool) -> Option<StopText> {
        let stops: Vec<String> = stops.iter().filter(|s| !s.is_empty()).cloned().collect();
        (!stops.is_empty()).then_some(StopText {
            stops,
            keep_stop,
            held: String::new(),
        })
    }

    /// Takes the answer's next piece of text. Returns the text that can be handed out now,
    /// and the stop string that ended the answer, if one did (the text is then all that
    /// comes before it, and the stop string itself when it is kept; of two at one place,
    /// the first given).
    pub fn push(&mut self, text: &str) -> (String, Option<String>) {
        self.held.push_str(text);
        // Text handed out earlier held no stop string, nor the start of one (that was kept
        // back), so the first stop string lies wholly in `held`.
        let first = self
            .stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()).map(|at| (at, stop)))
            .min_by_key(|&(at, _)| at);
        if let Some((at, stop)) = first {
            let stop = stop.clone();
            self.held.truncate(if self.keep_stop { at + stop.len() } else { at });
            return (std::mem::take(&mut self.held), Some(stop));
        }
        let keep = self.stops.iter().map(|stop| overlap(&self.held, stop)).max().unwrap_or(0);
        let ready = self.held.len() - keep;
        let text = self.held[..ready].to_owned();
        self.held.drain(..ready);
        (text, None)
    }

    /// The text still held back, at the answer's end (it ended without a stop string).
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// The stop tokens of one answer.
#[derive(Debug)]
pub(crate) struct StopIds {
    ids: Vec<u32>,
    /// vLLM's `include_stop_str_in_output`: the stop token's text ends the answer.
    keep_stop: bool,
}

impl StopIds {
    /// The matcher for `ids`; `None` when there are none.
    pub(crate) fn new(ids: &[u32], keep_stop: bool) -> Option<StopIds> {
        (!ids.is_empty()).then(|| StopIds {
            ids: ids.to_vec(),
            keep_stop,
        })
    }

    /// Takes a piece of the answer's text and the tokens it is the text of. With a stop token
    /// among them, the answer ends: the piece's text is dropped (a piece of several tokens is
    /// one whose first tokens were pieces of a character the last completes, so nothing
    /// before the stop token stands alone), or kept whole with `keep_stop`; the first stop
    /// token is returned.
    pub(crate) fn cut(&self, tokens: &[u32], text: String) -> (String, Option<u32>) {
        match tokens.iter().find(|id| self.ids.contains(id)) {
            None => (text, None),
            Some(&id) if self.keep_stop => (text, Some(id)),
            Some(&id) => (String::new(), Some(id)),
        }
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
        let (out, stop) = run_naming(stops, pieces, keep_stop);
        (out, stop.is_some())
    }

    /// The text handed out for `pieces`, and the stop string that ended it.
    fn run_naming(stops: &[&str], pieces: &[&str], keep_stop: bool) -> (Vec<String>, Option<String>) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut matcher = StopText::new(&stops, keep_stop).unwrap();
        let mut out = Vec::new();
        for piece in pieces {
            let (text, stop) = matcher.push(piece);
            out.push(text);
            if stop.is_some() {
                return (out, stop);
            }
        }
        out.push(matcher.flush());
        (out, None)
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
        assert_eq!(
            run_naming(&["c", "ab"], &["xabc"], false),
            (vec!["x".into()], Some("ab".into())),
            "the stop string that ended the answer is named"
        );
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
    fn a_stop_token_ends_the_answer_without_its_text_unless_kept() {
        let stops = StopIds::new(&[7, 42], false).unwrap();
        assert_eq!(stops.cut(&[3], "fn".into()), ("fn".into(), None));
        assert_eq!(stops.cut(&[42], "}".into()), ("".into(), Some(42)));
        assert_eq!(stops.cut(&[5, 7], "é".into()), ("".into(), Some(7)));
        let kept = StopIds::new(&[42], true).unwrap();
        assert_eq!(kept.cut(&[42], "}".into()), ("}".into(), Some(42)));
        assert!(StopIds::new(&[], false).is_none());
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
