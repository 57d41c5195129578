//! GGUF tokenizers against the model authors' own: llama.cpp's tokenizer tests (the kit's
//! `llama-cpp-vocabs`, out of llama.cpp's source) hold vocabulary-only GGUF files of several
//! model families, test texts (code, numbers, runs of white space and new lines, accents,
//! emoji, Chinese, Korean), and the ids Hugging Face's tokenizer gives each text. graft reads
//! a model's tokenizer from its GGUF file (`graft_engine::Tokenizer::from_gguf`, the vendored
//! mistralrs's `gguf_tokenizer`, the engine's own); every text must give those ids.

use std::path::Path;

use graft_engine::Tokenizer;

/// The texts of a test file (`.inp`): each one followed by the separator line.
fn texts(path: &Path) -> Vec<String> {
    let raw = std::fs::read_to_string(path).expect("a test's texts");
    let mut texts: Vec<String> = raw.split("\n__ggml_vocab_test__\n").map(str::to_owned).collect();
    assert_eq!(
        texts.pop().as_deref(),
        Some(""),
        "{}: the last text ends with a separator",
        path.display()
    );
    texts
}

/// The ids of each text (`.out`): a line each, every id after a space.
fn ids(path: &Path) -> Vec<Vec<u32>> {
    let raw = std::fs::read_to_string(path).expect("a test's ids");
    raw.lines()
        .map(|line| line.split_whitespace().map(|id| id.parse().expect("an id")).collect())
        .collect()
}

/// The texts of the vocabulary `family` whose ids differ from Hugging Face's, with both lists
/// of ids; and how many texts there were.
fn differences(folder: &Path, family: &str) -> (Vec<String>, usize) {
    let file = |ext: &str| folder.join(format!("ggml-vocab-{family}.{ext}"));
    let tokenizer = Tokenizer::from_gguf(&file("gguf")).unwrap_or_else(|e| panic!("{family}: {e}"));
    let (texts, expected) = (texts(&file("gguf.inp")), ids(&file("gguf.out")));
    assert_eq!(texts.len(), expected.len(), "{family}: a line of ids per text");
    assert!(texts.len() > 30, "{family}: {} texts", texts.len());
    let differ = texts
        .iter()
        .zip(&expected)
        .filter_map(|(text, want)| {
            let got = tokenizer.encode(text).unwrap_or_else(|e| panic!("{family}: {text:?}: {e}"));
            (&got != want).then(|| format!("{family}: {text:?}\n  graft        {got:?}\n  Hugging Face {want:?}"))
        })
        .collect();
    (differ, texts.len())
}

/// Every vocabulary the kit holds: byte-level BPE ones (Qwen2, Qwen3.5, Llama 3, DeepSeek, StarCoder,
/// GPT-2, Refact, Falcon, MPT), each split as its `tokenizer.ggml.pre` says, and SentencePiece
/// ones (Llama 2, Phi-3), merged by their scores.
#[test]
fn every_vocabulary_gives_hugging_faces_ids() {
    let folder = graft_tests::kit_file("llama-cpp-vocabs");
    let mut families: Vec<String> = std::fs::read_dir(&folder)
        .expect("the kit's folder")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            Some(name.strip_prefix("ggml-vocab-")?.strip_suffix(".gguf")?.to_owned())
        })
        .collect();
    families.sort();
    assert_eq!(families.len(), 12, "{families:?}");
    let mut all = Vec::new();
    for family in &families {
        let (differ, count) = differences(&folder, family);
        eprintln!("{family}: {} of {count} texts differ", differ.len());
        all.extend(differ);
    }
    assert!(all.is_empty(), "{} texts tokenized otherwise:\n{}", all.len(), all.join("\n"));
}

/// A SentencePiece vocabulary whose file says `add_space_prefix = false` (Gemma's; SentencePiece's
/// `add_dummy_prefix`) does not start the text with a space: a text with a space in front
/// gives what the same text without it gives where the prefix is added.
#[test]
fn a_sentencepiece_vocabulary_without_the_space_prefix_starts_with_none() {
    use candle_core::quantized::gguf_file::{self, Value};
    let folder = graft_tests::kit_file("llama-cpp-vocabs");
    let source = folder.join("ggml-vocab-llama-spm.gguf");
    let content = gguf_file::Content::read(&mut std::fs::File::open(&source).unwrap()).expect("the vocabulary's metadata");
    assert!(content.tensor_infos.is_empty(), "a vocabulary-only file");
    let mut metadata: Vec<(String, Value)> = content
        .metadata
        .into_iter()
        .filter(|(key, _)| key != "general.alignment" && key != "tokenizer.ggml.add_space_prefix")
        .collect();
    metadata.push(("tokenizer.ggml.add_space_prefix".to_owned(), Value::Bool(false)));
    let scratch = tempfile::tempdir().unwrap();
    let copy = scratch.path().join("no-prefix.gguf");
    let refs: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut std::fs::File::create(&copy).unwrap(), &refs, &[]).expect("a copy");

    let (with, without) = (Tokenizer::from_gguf(&source).unwrap(), Tokenizer::from_gguf(&copy).unwrap());
    for text in ["Hello world", "fn main() {\n    let x = 42;\n}", "' era"] {
        assert_eq!(without.encode(&format!(" {text}")).unwrap(), with.encode(text).unwrap(), "{text:?}");
        assert_ne!(without.encode(text).unwrap(), with.encode(text).unwrap(), "{text:?}");
        for text in [text.to_owned(), format!(" {text}")] {
            assert_eq!(without.decode(&without.encode(&text).unwrap()).unwrap(), text);
            assert_eq!(with.decode(&with.encode(&text).unwrap()).unwrap(), text);
        }
    }
}
