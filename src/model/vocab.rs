//! Vocabulary pruning for the base encoder's XLM-R Unigram tokenizer.
//!
//! The full `tokenizer.json` has 250,002 pieces and takes about 280 MB once the `tokenizers` crate
//! has loaded it, most of it in the byte trie of its Unigram model. The helpline reads French,
//! English, Arabic, Spanish and Portuguese. So the pruned tokenizer drops every piece that contains
//! a character of a script that none of these languages write, listed in [`DROPPED_SCRIPTS`]. They
//! include CJK, Hangul, kana, Cyrillic, Greek, Hebrew, the Indic scripts, Thai, Georgian and
//! Ethiopic. Latin letters with any diacritic, Arabic, digits, punctuation, symbols and emoji are
//! all kept, and so are the few letters of dropped scripts that kaomoji use ([`KAOMOJI_LETTERS`]).
//! The pinned tokenizer keeps 129,451 pieces, which take about 115 MB.
//!
//! NOTE: most of those 115 MB are still the `tokenizers` crate's trie, with one hash map per node.
//! Going lower needs a Unigram model with a compact trie, which that crate does not offer.
//!
//! Invariant: a text with no character in a dropped script gets the same token ids from the
//! pruned tokenizer as from the full one. The Unigram model runs a Viterbi search over the pieces
//! that match the normalised text. A dropped piece contains a character that such a text cannot
//! contain after normalisation, so it never matches, and the kept pieces keep their scores. Two
//! details make this exact:
//! - The normaliser (SentencePiece's precompiled charsmap, close to NFKC) turns some kept
//!   characters into dropped ones: `µ` into Greek `μ`, `Ω` (ohm sign) followed by a combining
//!   accent into accented Greek. So every charsmap entry whose source has only kept characters is
//!   read, and the characters it produces count as kept ([`KeptChars`]).
//! - An unknown character scores the lowest piece score minus 10. So the pieces with the lowest
//!   score are always kept, as are `<unk>` and the special tokens.
//!
//! Token ids stay the original ids, because the embedding rows are indexed by them. The pruned
//! vocabulary keeps the original order, and [`ORIGINAL_IDS_FILE`] gives the original id of each
//! pruned id. [`BaseTokenizer`] maps ids back to the original ones after encoding, and the other
//! way before decoding.
//!
//! Text in a dropped script does not fail. Its characters match no piece, so each run of them
//! becomes one `<unk>` token (id 3), usually after a lone `▁` piece (id 6) where a word starts.
//! The encoder therefore reads such text as unknown words and takes no meaning from it.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokenizers::Tokenizer;

use super::base::{sha256_hex, TOKENIZER_FILE};

/// The pruned `tokenizer.json`, whose ids are positions in the pruned vocabulary.
pub const PRUNED_TOKENIZER_FILE: &str = "tokenizer.pruned.json";
/// The original id of each pruned id, with the fingerprint of the rule that pruned them.
pub const ORIGINAL_IDS_FILE: &str = "tokenizer.pruned.ids.json";

/// Version of the pruning code, part of [`rule_fingerprint`]. Bump it when the output changes.
const PRUNING_VERSION: u32 = 1;

/// Unicode ranges, inclusive and sorted, of the scripts that none of French, English, Arabic,
/// Spanish and Portuguese write, with their compatibility and presentation forms. Punctuation
/// and symbol blocks are not listed, not even CJK ones, except a few symbols and modifier
/// letters that the charsmap turns into letters of dropped scripts (Greek mathematical letters,
/// Greek and Cyrillic modifier letters, Hangzhou numerals). The other mathematical letters are
/// kept: they become Latin letters and digits, as in "fancy font" nicknames.
pub const DROPPED_SCRIPTS: &[(u32, u32, &str)] = &[
    (0x0370, 0x03FF, "Greek and Coptic"),
    (0x0400, 0x052F, "Cyrillic and Cyrillic Supplement"),
    (0x0530, 0x058F, "Armenian"),
    (0x0590, 0x05FF, "Hebrew"),
    (0x0700, 0x074F, "Syriac"),
    (0x0780, 0x086F, "Thaana, NKo, Samaritan, Mandaic, Syriac Supplement"),
    (0x0900, 0x0DFF, "Devanagari to Sinhala"),
    (0x0E00, 0x0FFF, "Thai, Lao, Tibetan"),
    (0x1000, 0x109F, "Myanmar"),
    (0x10A0, 0x10FF, "Georgian"),
    (0x1100, 0x11FF, "Hangul Jamo"),
    (0x1200, 0x139F, "Ethiopic and Ethiopic Supplement"),
    (0x13A0, 0x18FF, "Cherokee to Unified Canadian Aboriginal Syllabics Extended"),
    (0x1900, 0x1AAF, "Limbu to Tai Tham"),
    (0x1B00, 0x1CFF, "Balinese to Vedic Extensions"),
    (0x1D26, 0x1D2B, "Greek and Cyrillic small capitals"),
    (0x1D5D, 0x1D61, "Greek modifier letters"),
    (0x1D66, 0x1D6A, "Greek subscript letters"),
    (0x1D78, 0x1D78, "modifier letter Cyrillic en"),
    (0x1DBF, 0x1DBF, "modifier letter small theta"),
    (0x1F00, 0x1FFF, "Greek Extended"),
    (0x2C00, 0x2C5F, "Glagolitic"),
    (0x2C80, 0x2DFF, "Coptic to Cyrillic Extended-A"),
    (0x2E80, 0x2FFF, "CJK radicals and ideographic description characters"),
    (0x3038, 0x303A, "Hangzhou numerals ten to thirty"),
    (0x3040, 0x33FF, "Hiragana to CJK Compatibility"),
    (0x3400, 0x4DBF, "CJK Unified Ideographs Extension A"),
    (0x4E00, 0x9FFF, "CJK Unified Ideographs"),
    (0xA000, 0xA6FF, "Yi to Bamum"),
    (0xA800, 0xAB2F, "Syloti Nagri to Ethiopic Extended-A"),
    (0xAB70, 0xABFF, "Cherokee Supplement, Meetei Mayek"),
    (0xAC00, 0xD7FF, "Hangul Syllables and Hangul Jamo Extended-B"),
    (0xF900, 0xFAFF, "CJK Compatibility Ideographs"),
    (0xFB13, 0xFB17, "Armenian ligatures"),
    (0xFB1D, 0xFB4F, "Hebrew presentation forms"),
    (0xFF65, 0xFFDC, "halfwidth katakana and Hangul"),
    (0x10000, 0x1BCFF, "historic scripts, Tangut, Kana Supplement, Duployan"),
    (0x1D6A8, 0x1D7CB, "Greek mathematical letters"),
    (0x1E000, 0x1EDFF, "Glagolitic Supplement to Ottoman Siyaq Numbers"),
    (0x1F200, 0x1F2FF, "Enclosed Ideographic Supplement"),
    (0x20000, 0x3FFFF, "CJK Unified Ideographs Extensions B and later"),
];

/// Letters of dropped scripts that common kaomoji use, such as ¯\_(ツ)_/¯, ಠ_ಠ, (・ω・) and
/// (ノಠ益ಠ)ノ彡┻━┻. They are kept, so pieces made of them and of kept characters stay.
pub const KAOMOJI_LETTERS: &[char] = &['ツ', 'ノ', '・', 'ಠ', 'ಥ', 'ω', 'Д', 'ლ', '益', '彡'];

/// Tells whether `c` belongs to a dropped script ([`DROPPED_SCRIPTS`] minus [`KAOMOJI_LETTERS`]).
pub fn in_dropped_script(c: char) -> bool {
    let code = c as u32;
    let index = DROPPED_SCRIPTS.partition_point(|&(_, last, _)| last < code);
    let listed = DROPPED_SCRIPTS.get(index).is_some_and(|&(first, _, _)| first <= code);
    listed && !KAOMOJI_LETTERS.contains(&c)
}

/// Counts the letters of `text`: those in a dropped script, and all of them. The pruned
/// vocabulary turns the former into `<unk>` tokens, so the encoder gets nothing of them.
pub fn count_dropped_script_letters(text: &str) -> (usize, usize) {
    text.chars()
        .filter(|c| c.is_alphabetic())
        .fold((0, 0), |(dropped, letters), c| (dropped + usize::from(in_dropped_script(c)), letters + 1))
}

/// Identifies the pruning rule, so that files pruned by another rule are rebuilt.
pub fn rule_fingerprint() -> String {
    let rule = format!("{PRUNING_VERSION} {DROPPED_SCRIPTS:?} {KAOMOJI_LETTERS:?}");
    sha256_hex(rule.as_bytes())[..16].to_string()
}

/// The characters that a normalised, pre-tokenised text can contain when the raw text has no
/// character in a dropped script.
#[derive(Debug, Default)]
pub struct KeptChars {
    /// Dropped-script characters that the normaliser or pre-tokeniser make from kept ones.
    produced: HashSet<char>,
}

impl KeptChars {
    /// Reads what the tokenizer's normaliser and pre-tokeniser can produce. Fails on a component
    /// whose output is not known, because pruning would then lose its guarantee.
    pub fn from_config(normalizer: &Value, pre_tokenizer: &Value) -> Result<Self> {
        let mut kept = KeptChars::default();
        kept.add_normalizer(normalizer)?;
        kept.add_pre_tokenizer(pre_tokenizer)?;
        Ok(kept)
    }

    pub fn contains(&self, c: char) -> bool {
        !in_dropped_script(c) || self.produced.contains(&c)
    }

    /// Dropped-script characters that still count as kept, in code point order.
    pub fn produced(&self) -> Vec<char> {
        let mut produced: Vec<char> = self.produced.iter().copied().collect();
        produced.sort_unstable();
        produced
    }

    fn add_output(&mut self, text: &str) {
        self.produced.extend(text.chars().filter(|&c| in_dropped_script(c)));
    }

    fn add_normalizer(&mut self, normalizer: &Value) -> Result<()> {
        if normalizer.is_null() {
            return Ok(());
        }
        match component_type(normalizer) {
            "Sequence" => {
                for inner in component_list(normalizer, "normalizers")? {
                    self.add_normalizer(inner)?;
                }
            }
            "Precompiled" => {
                let encoded = normalizer["precompiled_charsmap"]
                    .as_str()
                    .context("the Precompiled normaliser has no precompiled_charsmap string")?;
                // A source counts when an earlier normaliser of the sequence can produce it.
                let targets: Vec<String> = charsmap_entries(&base64_decode(encoded)?)?
                    .into_iter()
                    .filter(|(source, _)| source.chars().all(|c| self.contains(c)))
                    .map(|(_, target)| target)
                    .collect();
                for target in &targets {
                    self.add_output(target);
                }
            }
            "Replace" => {
                let content = normalizer["content"].as_str().context("the Replace normaliser has no content")?;
                self.add_output(content);
            }
            "Prepend" => {
                let prepend = normalizer["prepend"].as_str().context("the Prepend normaliser has no prepend")?;
                self.add_output(prepend);
            }
            // Only removes whitespace.
            "Strip" => {}
            other => bail!("the {other} normaliser is not supported by vocabulary pruning"),
        }
        Ok(())
    }

    fn add_pre_tokenizer(&mut self, pre_tokenizer: &Value) -> Result<()> {
        if pre_tokenizer.is_null() {
            return Ok(());
        }
        match component_type(pre_tokenizer) {
            "Sequence" => {
                for inner in component_list(pre_tokenizer, "pretokenizers")? {
                    self.add_pre_tokenizer(inner)?;
                }
            }
            "Metaspace" => {
                let replacement = pre_tokenizer["replacement"].as_str().context("Metaspace has no replacement")?;
                self.add_output(replacement);
            }
            // These only split the text.
            "Whitespace" | "WhitespaceSplit" | "Punctuation" | "Digits" | "Split" | "UnicodeScripts" => {}
            other => bail!("the {other} pre-tokeniser is not supported by vocabulary pruning"),
        }
        Ok(())
    }
}

fn component_type(component: &Value) -> &str {
    component["type"].as_str().unwrap_or("untyped")
}

fn component_list<'a>(component: &'a Value, field: &str) -> Result<&'a Vec<Value>> {
    component[field].as_array().with_context(|| format!("a Sequence has no {field} list"))
}

/// Decodes standard base64 with padding, as `tokenizer.json` stores the precompiled charsmap.
pub fn base64_decode(text: &str) -> Result<Vec<u8>> {
    let value = |byte: u8| -> Result<u32> {
        Ok(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => bail!("invalid base64 byte {byte:#04x}"),
        } as u32)
    };
    let bytes = text.trim_end_matches('=').as_bytes();
    if bytes.len() % 4 == 1 {
        bail!("base64 text has an impossible length");
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut bits = 0u32;
        for &byte in chunk {
            bits = (bits << 6) | value(byte)?;
        }
        bits <<= 6 * (4 - chunk.len()) as u32;
        out.extend_from_slice(&bits.to_be_bytes()[1..chunk.len()]);
    }
    Ok(out)
}

/// Reads every (source, target) entry of a SentencePiece precompiled charsmap: a little-endian
/// u32 byte length, a darts-clone double-array trie of u32 units keyed by the source's UTF-8
/// bytes, then the NUL-terminated targets that the trie's values point into. The unit layout is
/// the one that `spm_precompiled` (used by `tokenizers`) reads.
pub fn charsmap_entries(charsmap: &[u8]) -> Result<Vec<(String, String)>> {
    const MAX_KEY_BYTES: usize = 64;
    let offset = |unit: u32| ((unit >> 10) << ((unit & (1 << 9)) >> 6)) as usize;
    let label = |unit: u32| unit & ((1 << 31) | 0xFF);
    let has_leaf = |unit: u32| (unit >> 8) & 1 == 1;
    let malformed = || anyhow!("the precompiled charsmap is malformed");

    let trie_bytes = u32::from_le_bytes(charsmap.get(..4).ok_or_else(malformed)?.try_into()?) as usize;
    let trie = charsmap.get(4..4 + trie_bytes).filter(|t| t.len() % 4 == 0).ok_or_else(malformed)?;
    let units: Vec<u32> = trie.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    let targets = &charsmap[4 + trie_bytes..];

    let mut entries = Vec::new();
    let mut stack = vec![(offset(*units.first().ok_or_else(malformed)?), Vec::new())];
    while let Some((node, key)) = stack.pop() {
        if key.len() > MAX_KEY_BYTES {
            bail!("the precompiled charsmap has a key longer than {MAX_KEY_BYTES} bytes");
        }
        for byte in 1..=u8::MAX {
            let position = node ^ byte as usize;
            let Some(&unit) = units.get(position) else { continue };
            if label(unit) != byte as u32 {
                continue;
            }
            let child = position ^ offset(unit);
            let mut child_key = key.clone();
            child_key.push(byte);
            if has_leaf(unit) {
                let start = (units.get(child).ok_or_else(malformed)? & 0x7FFF_FFFF) as usize;
                let rest = targets.get(start..).ok_or_else(malformed)?;
                let target = &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())];
                let source = String::from_utf8(child_key.clone()).map_err(|_| malformed())?;
                entries.push((source, String::from_utf8(target.to_vec()).map_err(|_| malformed())?));
            }
            stack.push((child, child_key));
        }
    }
    Ok(entries)
}

/// Returns the original ids of the pieces to keep, in increasing order: pieces made only of kept
/// characters, every id in `always`, and every piece with the lowest score.
pub fn kept_ids(vocab: &[(String, f64)], always: &[u32], chars: &KeptChars) -> Vec<u32> {
    let lowest = vocab.iter().map(|(_, score)| *score).fold(f64::INFINITY, f64::min);
    (0..vocab.len() as u32)
        .filter(|&id| {
            let (piece, score) = &vocab[id as usize];
            always.contains(&id) || *score == lowest || piece.chars().all(|c| chars.contains(c))
        })
        .collect()
}

/// The pruned tokenizer in memory.
pub struct Pruned {
    /// The pruned `tokenizer.json`.
    pub json: String,
    /// The original id of each pruned id, increasing.
    pub original_ids: Vec<u32>,
    /// Number of pieces in the full vocabulary.
    pub full_pieces: usize,
}

/// Prunes a Unigram `tokenizer.json`. Fails when the tokenizer is not a Unigram model, when an
/// added token is not in its vocabulary, or when its normaliser or pre-tokeniser is not one whose
/// output [`KeptChars`] can bound.
///
/// The pruned file has no post-processor, because [`super::encoder::Encoder`] adds `<s>` and
/// `</s>` itself: encoding it with special tokens adds none.
pub fn prune_tokenizer_json(full: &str) -> Result<Pruned> {
    let mut root: Value = serde_json::from_str(full).context("the tokenizer is not valid JSON")?;
    let chars = KeptChars::from_config(&root["normalizer"], &root["pre_tokenizer"])?;
    let model = root.get_mut("model").context("the tokenizer has no model")?;
    if component_type(model) != "Unigram" {
        bail!("vocabulary pruning needs a Unigram model, not {}", component_type(model));
    }
    let vocab: Vec<(String, f64)> = serde_json::from_value(model["vocab"].take())
        .context("the Unigram vocabulary is not a list of [piece, score]")?;
    let unk_id = model["unk_id"].as_u64().map(|id| id as u32);

    let added: Vec<u32> = root["added_tokens"]
        .as_array()
        .map(|tokens| tokens.iter().filter_map(|token| token["id"].as_u64()).map(|id| id as u32).collect())
        .unwrap_or_default();
    if let Some(&id) = added.iter().chain(&unk_id).find(|&&id| id as usize >= vocab.len()) {
        bail!("added token {id} is not in the Unigram vocabulary");
    }
    let always: Vec<u32> = added.iter().copied().chain(unk_id).collect();
    let original_ids = kept_ids(&vocab, &always, &chars);
    let pruned_id = |original: u32| original_ids.binary_search(&original).map(|id| id as u64).ok();

    let model = &mut root["model"];
    model["vocab"] = original_ids.iter().map(|&id| serde_json::json!(vocab[id as usize])).collect();
    if let Some(unk) = unk_id {
        model["unk_id"] = pruned_id(unk).into();
    }
    if let Some(tokens) = root["added_tokens"].as_array_mut() {
        for token in tokens {
            let original = token["id"].as_u64().map(|id| id as u32);
            token["id"] = original.and_then(pruned_id).into();
        }
    }
    root["post_processor"] = Value::Null;
    let json = serde_json::to_string(&root)?;
    Ok(Pruned { json, original_ids, full_pieces: vocab.len() })
}

/// Contents of [`ORIGINAL_IDS_FILE`].
#[derive(Debug, Serialize, Deserialize)]
struct IdsFile {
    /// [`rule_fingerprint`] of the rule that pruned the vocabulary.
    rule: String,
    original_ids: Vec<u32>,
}

/// Maps between pruned ids and original ids. Original ids are increasing in pruned order, so
/// the reverse lookup is a binary search.
#[derive(Debug, Clone)]
pub struct IdMap {
    original: Vec<u32>,
}

impl IdMap {
    pub fn new(original: Vec<u32>) -> Result<Self> {
        if original.windows(2).any(|pair| pair[0] >= pair[1]) {
            bail!("the original ids of a pruned vocabulary must increase");
        }
        Ok(IdMap { original })
    }

    pub fn original(&self, pruned: u32) -> Option<u32> {
        self.original.get(pruned as usize).copied()
    }

    pub fn pruned(&self, original: u32) -> Option<u32> {
        self.original.binary_search(&original).ok().map(|id| id as u32)
    }
}

/// Prunes `tokenizer.json` of a base folder and writes [`PRUNED_TOKENIZER_FILE`] and
/// [`ORIGINAL_IDS_FILE`] into it. When this tokenizer cannot be pruned, it only logs a warning,
/// and the encoder loads the full tokenizer. Fails only when a file cannot be read or written.
pub fn write_pruned_tokenizer(dir: &Path) -> Result<()> {
    let full_path = dir.join(TOKENIZER_FILE);
    let full = fs::read_to_string(&full_path).with_context(|| format!("failed to read {}", full_path.display()))?;
    match prune_tokenizer_json(&full) {
        Ok(pruned) => save_pruned(dir, &pruned),
        Err(error) => {
            tracing::warn!(error = %error, "the tokenizer cannot be pruned, so the full vocabulary will be used");
            Ok(())
        }
    }
}

/// Writes the pruned tokenizer, then the id map, each through a temporary file and a rename.
/// The id map goes last and is checked against the tokenizer at load, so a crash in between
/// leaves a pair that the loader rebuilds.
fn save_pruned(dir: &Path, pruned: &Pruned) -> Result<()> {
    write_atomic(&dir.join(PRUNED_TOKENIZER_FILE), pruned.json.as_bytes())?;
    let ids = IdsFile { rule: rule_fingerprint(), original_ids: pruned.original_ids.clone() };
    write_atomic(&dir.join(ORIGINAL_IDS_FILE), &serde_json::to_vec(&ids)?)?;
    tracing::info!(
        pieces_kept = pruned.original_ids.len(),
        pieces_total = pruned.full_pieces,
        dir = %dir.display(),
        "pruned tokenizer written"
    );
    Ok(())
}

/// Writes `path` through a sibling temporary file of its own, then a rename, so that readers and
/// concurrent writers (other threads or processes loading the same base folder) only ever see a
/// complete file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().context("a file to write has no name")?.to_string_lossy();
    let write = WRITES.fetch_add(1, Ordering::Relaxed);
    let temporary = path.with_file_name(format!(".{name}.{}-{write}.tmp", std::process::id()));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()))
        .and_then(|()| fs::rename(&temporary, path));
    if let Err(error) = written {
        let _ = fs::remove_file(&temporary);
        bail!("failed to write {}: {error}", path.display());
    }
    Ok(())
}

/// The base encoder's tokenizer, pruned when possible, that encodes to and decodes from original
/// token ids.
///
/// Encoding adds no special tokens and never truncates, because [`super::encoder::Encoder`] does
/// both.
pub struct BaseTokenizer {
    tokenizer: Tokenizer,
    /// Map from the ids of `tokenizer` to original ids, or `None` for the full tokenizer.
    ids: Option<IdMap>,
}

impl BaseTokenizer {
    /// Loads the pruned tokenizer of a base folder.
    ///
    /// When the pruned files are missing (a folder fetched before pruning existed), stale or
    /// unreadable, it prunes `tokenizer.json` again and saves the result. When saving fails, it
    /// keeps the pruned tokenizer in memory only. When the tokenizer cannot be pruned at all, it
    /// loads the full one.
    pub fn load(dir: &Path) -> Result<Self> {
        let mut loaded = match Self::load_pruned(dir) {
            Ok(Some(loaded)) => loaded,
            Ok(None) => Self::prune(dir)?,
            Err(error) => {
                tracing::warn!(error = %error, "the pruned tokenizer is unusable, so it is pruned again");
                Self::prune(dir)?
            }
        };
        // Truncation, special tokens and padding are applied by the encoder, so that one
        // tokenizer serves both truncated inputs and windows.
        loaded.tokenizer.with_truncation(None).map_err(|e| anyhow!("failed to disable truncation: {e}"))?;
        loaded.tokenizer.with_padding(None);
        Ok(loaded)
    }

    /// Loads the saved pruned tokenizer, or returns `None` when its files are missing or were made
    /// by another rule.
    fn load_pruned(dir: &Path) -> Result<Option<Self>> {
        let (tokenizer_path, ids_path) = (dir.join(PRUNED_TOKENIZER_FILE), dir.join(ORIGINAL_IDS_FILE));
        if !tokenizer_path.is_file() || !ids_path.is_file() {
            tracing::info!(dir = %dir.display(), "the base folder has no pruned tokenizer, so it is pruned now");
            return Ok(None);
        }
        let bytes = fs::read(&ids_path).with_context(|| format!("failed to read {}", ids_path.display()))?;
        let ids: IdsFile =
            serde_json::from_slice(&bytes).with_context(|| format!("{} is invalid", ids_path.display()))?;
        if ids.rule != rule_fingerprint() {
            tracing::info!(dir = %dir.display(), "the pruned tokenizer follows another pruning rule, so it is pruned again");
            return Ok(None);
        }
        let tokenizer = Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| anyhow!("failed to load {}: {e}", tokenizer_path.display()))?;
        if tokenizer.get_vocab_size(false) != ids.original_ids.len() {
            bail!("{} and {} do not match", tokenizer_path.display(), ids_path.display());
        }
        Ok(Some(BaseTokenizer { tokenizer, ids: Some(IdMap::new(ids.original_ids)?) }))
    }

    /// Prunes `tokenizer.json` and saves the result when it can. Falls back to the full
    /// tokenizer when this one cannot be pruned.
    fn prune(dir: &Path) -> Result<Self> {
        let full_path = dir.join(TOKENIZER_FILE);
        let full = fs::read_to_string(&full_path).with_context(|| format!("failed to read {}", full_path.display()))?;
        let pruned = match prune_tokenizer_json(&full) {
            Ok(pruned) => pruned,
            Err(error) => {
                tracing::warn!(error = %error, "the tokenizer cannot be pruned, so the full vocabulary is used");
                let tokenizer =
                    Tokenizer::from_str(&full).map_err(|e| anyhow!("failed to load {}: {e}", full_path.display()))?;
                return Ok(BaseTokenizer { tokenizer, ids: None });
            }
        };
        drop(full);
        if let Err(error) = save_pruned(dir, &pruned) {
            tracing::warn!(error = %error, "failed to save the pruned tokenizer, so it is kept in memory only");
        }
        let tokenizer =
            Tokenizer::from_str(&pruned.json).map_err(|e| anyhow!("failed to load the pruned tokenizer: {e}"))?;
        Ok(BaseTokenizer { tokenizer, ids: Some(IdMap::new(pruned.original_ids)?) })
    }

    /// Returns true when the vocabulary is pruned.
    pub fn is_pruned(&self) -> bool {
        self.ids.is_some()
    }

    /// Returns the number of pieces in the loaded vocabulary, pruned or not.
    pub fn pieces(&self) -> usize {
        self.tokenizer.get_vocab_size(false)
    }

    /// Tokenizes `text` into original token ids, without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.tokenizer.encode(text, false).map_err(|e| anyhow!("tokenization failed: {e}"))?;
        match &self.ids {
            None => Ok(encoding.get_ids().to_vec()),
            Some(map) => encoding
                .get_ids()
                .iter()
                .map(|&id| map.original(id).context("the pruned tokenizer returned an id outside its vocabulary"))
                .collect(),
        }
    }

    /// Returns the original id of a piece or special token.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        let id = self.tokenizer.token_to_id(token)?;
        match &self.ids {
            None => Some(id),
            Some(map) => map.original(id),
        }
    }

    /// Decodes original token ids. Fails on an id whose piece was pruned, which this tokenizer's
    /// own [`BaseTokenizer::encode`] never returns.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        let local: Vec<u32> = match &self.ids {
            None => ids.to_vec(),
            Some(map) => ids
                .iter()
                .map(|&id| map.pruned(id).context("a token id has no piece in the pruned vocabulary"))
                .collect::<Result<_>>()?,
        };
        self.tokenizer.decode(&local, skip_special_tokens).map_err(|e| anyhow!("detokenization failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_script_letters_are_counted() {
        assert_eq!(count_dropped_script_letters("я хочу умереть"), (12, 12));
        assert_eq!(count_dropped_script_letters("il m'a écrit « привет » hier"), (6, 19));
        assert_eq!(count_dropped_script_letters("on m'insulte sur snap 😭 ¯\\_(ツ)_/¯"), (0, 18));
        assert_eq!(count_dropped_script_letters("!!! 123 😭"), (0, 0));
        assert_eq!(count_dropped_script_letters("أنا خائف"), (0, 7));
    }

    #[test]
    fn dropped_script_ranges_are_sorted_and_disjoint() {
        for pair in DROPPED_SCRIPTS.windows(2) {
            assert!(pair[0].0 <= pair[0].1, "{:?}", pair[0]);
            assert!(pair[0].1 < pair[1].0, "{:?} overlaps or precedes {:?}", pair[0], pair[1]);
        }
    }

    #[test]
    fn scripts_of_the_five_languages_are_kept() {
        let kept = "aAzZ09 éèêëàâäîïôöùûüçœæÉÀÇ ñáíóú¿¡ ãõâêôç ß ة ي ﻻ ٣ ۴ ▁ ,.!?'\"@#%&*()[]{}<>~ €$£ \
                    😭🙏🏽👨‍👩‍👧 ❤️ ♥ ★ → ° ¯ ʖ ͡ ͜ ᴀ 𝐁 ｆ ㅤ";
        for c in kept.chars().filter(|c| !c.is_whitespace() && *c != 'ㅤ') {
            assert!(!in_dropped_script(c), "{c:?} (U+{:04X}) is dropped", c as u32);
        }
    }

    #[test]
    fn other_scripts_are_dropped_except_kaomoji_letters() {
        for c in "αΩПриветשלוםनमस्तेสวัสดีგამარჯობაԲարևሰላምの한国语中文ｱ𠀀".chars()
        {
            assert!(in_dropped_script(c), "{c:?} (U+{:04X}) is kept", c as u32);
        }
        for &c in KAOMOJI_LETTERS {
            assert!(!in_dropped_script(c), "{c:?} is dropped");
        }
    }

    #[test]
    fn rule_fingerprint_is_stable_and_short() {
        assert_eq!(rule_fingerprint(), rule_fingerprint());
        assert_eq!(rule_fingerprint().len(), 16);
    }

    #[test]
    fn base64_decodes_every_padding() {
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("Zg==").unwrap(), b"f");
        assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
        assert_eq!(base64_decode("Zm9v").unwrap(), b"foo");
        assert_eq!(base64_decode("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(base64_decode("/+8A").unwrap(), [0xff, 0xef, 0x00]);
        assert!(base64_decode("Zm9v!").is_err());
        assert!(base64_decode("Z").is_err());
    }

    /// Builds a charsmap with two entries, "a" → "x" and "ab" → "y", laid out by hand. The root
    /// unit's offset is 1, "a" is unit 1 ^ 0x61 = 96 with its value in unit 97, and "b" under it is
    /// unit 97 ^ 0x62 = 3 with its value in unit 4. With 260 units, every byte's position is in
    /// range.
    fn tiny_charsmap() -> Vec<u8> {
        let unit = |label: u32, leaf: bool, offset: u32| label | (u32::from(leaf) << 8) | (offset << 10);
        let mut units = vec![0u32; 260];
        units[0] = unit(0, false, 1);
        units[96] = unit(0x61, true, 96 ^ 97);
        units[97] = 1 << 31; // value 0: "x"
        units[3] = unit(0x62, true, 3 ^ 4);
        units[4] = (1 << 31) | 2; // value 2: "y"
        let mut bytes = ((units.len() * 4) as u32).to_le_bytes().to_vec();
        bytes.extend(units.iter().flat_map(|u| u.to_le_bytes()));
        bytes.extend(b"x\0y\0");
        bytes
    }

    #[test]
    fn charsmap_entries_reads_a_hand_made_trie() {
        let mut entries = charsmap_entries(&tiny_charsmap()).unwrap();
        entries.sort();
        assert_eq!(entries, vec![("a".to_string(), "x".to_string()), ("ab".to_string(), "y".to_string())]);
    }

    #[test]
    fn hand_made_trie_reads_the_same_in_tokenizers() {
        // Checks that the layout above is the one `tokenizers` itself reads.
        let precompiled = tokenizers::normalizers::precompiled::Precompiled::from(&tiny_charsmap()).unwrap();
        assert_eq!(precompiled.transform("a"), Some("x"));
        // The shortest matching key wins, as the tokenizer's grapheme lookup relies on.
        assert_eq!(precompiled.transform("ab"), Some("x"));
        assert_eq!(precompiled.transform("b"), None);
    }

    #[test]
    fn truncated_charsmap_is_an_error() {
        let bytes = tiny_charsmap();
        assert!(charsmap_entries(&bytes[..2]).is_err());
        assert!(charsmap_entries(&bytes[..100]).is_err());
    }

    fn vocab(pieces: &[(&str, f64)]) -> Vec<(String, f64)> {
        pieces.iter().map(|(piece, score)| (piece.to_string(), *score)).collect()
    }

    #[test]
    fn kept_ids_drop_pieces_with_a_dropped_character() {
        let pieces = vocab(&[
            ("<unk>", 0.0),
            ("▁de", -5.0),
            ("▁при", -6.0),
            ("ة", -7.0),
            ("x中", -8.0),
            ("ツ", -9.0),
            ("é", -10.0),
        ]);
        assert_eq!(kept_ids(&pieces, &[0], &KeptChars::default()), vec![0, 1, 3, 5, 6]);
    }

    #[test]
    fn kept_ids_include_lowest_and_forced() {
        let pieces = vocab(&[("<unk>", 0.0), ("<mask>", 0.0), ("кот", -3.0), ("a", -2.0), ("я", -20.0), ("ю", -20.0)]);
        // Both lowest-score pieces stay, so the unknown-character score does not move.
        assert_eq!(kept_ids(&pieces, &[0, 1], &KeptChars::default()), vec![0, 1, 3, 4, 5]);
    }

    #[test]
    fn normaliser_output_counts_as_kept() {
        let normalizer = serde_json::json!({
            "type": "Sequence",
            "normalizers": [
                { "type": "Replace", "pattern": { "String": "µ" }, "content": "μ" },
                { "type": "Replace", "pattern": { "String": "Ж" }, "content": "ж" },
            ]
        });
        let metaspace = serde_json::json!({ "type": "Metaspace", "replacement": "▁" });
        let chars = KeptChars::from_config(&normalizer, &metaspace).unwrap();
        assert!(chars.contains('μ'));
        // A Replace rule's content may come from any text, so it always counts as produced.
        assert!(chars.contains('ж'));
        assert!(!chars.contains('я'));
        assert_eq!(chars.produced(), vec!['μ', 'ж']);
    }

    #[test]
    fn unknown_normalizer_is_refused() {
        let error = KeptChars::from_config(&serde_json::json!({ "type": "Lowercase" }), &Value::Null).unwrap_err();
        assert!(error.to_string().contains("Lowercase"), "{error}");
        let error = KeptChars::from_config(&Value::Null, &serde_json::json!({ "type": "ByteLevel" })).unwrap_err();
        assert!(error.to_string().contains("ByteLevel"), "{error}");
    }

    fn tiny_tokenizer_json() -> String {
        serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [
                { "id": 0, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true },
                { "id": 1, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true },
                { "id": 7, "content": "<mask>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true }
            ],
            "normalizer": null,
            "pre_tokenizer": { "type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true },
            "post_processor": null,
            "decoder": { "type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true },
            "model": {
                "type": "Unigram",
                "unk_id": 1,
                "vocab": [["<s>", 0.0], ["<unk>", 0.0], ["▁", -2.0], ["▁да", -3.0], ["a", -4.0], ["▁ab", -5.0],
                          ["д", -6.0], ["<mask>", 0.0], ["b", -9.0]]
            }
        })
        .to_string()
    }

    #[test]
    fn pruned_json_keeps_original_ids_through_the_map() {
        let pruned = prune_tokenizer_json(&tiny_tokenizer_json()).unwrap();
        assert_eq!(pruned.original_ids, vec![0, 1, 2, 4, 5, 7, 8]);
        assert_eq!(pruned.full_pieces, 9);
        let root: Value = serde_json::from_str(&pruned.json).unwrap();
        assert_eq!(root["model"]["unk_id"], 1);
        assert_eq!(root["added_tokens"][2]["id"], 5, "<mask> moves to its pruned position");

        let tokenizer = BaseTokenizer {
            tokenizer: Tokenizer::from_str(&pruned.json).unwrap(),
            ids: Some(IdMap::new(pruned.original_ids).unwrap()),
        };
        assert_eq!(tokenizer.encode("ab a").unwrap(), vec![5, 2, 4]);
        assert_eq!(tokenizer.token_id("<mask>"), Some(7));
        // Cyrillic lost its pieces: one fused <unk> after the word-start piece.
        assert_eq!(tokenizer.encode("да").unwrap(), vec![2, 1]);
        assert_eq!(tokenizer.decode(&[5, 2, 4], true).unwrap(), "ab a");
        assert!(tokenizer.decode(&[3], true).is_err(), "id 3 was pruned");
    }

    #[test]
    fn non_unigram_tokenizer_is_not_pruned() {
        let mut root: Value = serde_json::from_str(&tiny_tokenizer_json()).unwrap();
        root["model"]["type"] = "BPE".into();
        let error = prune_tokenizer_json(&root.to_string()).err().expect("a BPE model was pruned");
        assert!(error.to_string().contains("Unigram"), "{error}");
    }

    #[test]
    fn id_map_goes_both_ways() {
        let map = IdMap::new(vec![0, 2, 5, 9]).unwrap();
        assert_eq!(map.original(2), Some(5));
        assert_eq!(map.original(4), None);
        assert_eq!(map.pruned(9), Some(3));
        assert_eq!(map.pruned(3), None);
        assert!(IdMap::new(vec![0, 2, 2]).is_err());
    }
}
