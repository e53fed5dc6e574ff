//! `report.json`: the machine-readable report. The figures of the whole set are at the top
//! level (`macro_f1`, `micro_f1`, `confusion`, `critical`, `calibration` and the others of
//! [`Figures`]). The same figures are repeated under `slices` and `perturbation`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::baseline::Comparison;
use super::bootstrap::Interval;
use super::figures::Figures;
use super::slices::SliceFigures;
use crate::model::manifest::{MANIFEST_FILE, RULES_FILE};
use crate::triage::classification::ModelInfo;

/// Value of the `format` key; bump it when a key changes meaning.
pub const FORMAT: &str = "cybertriage-eval/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub format: String,
    /// UTC time the report was made, `YYYY-MM-DDTHH:MM:SSZ`.
    pub generated_at: String,
    pub data: DataIdentity,
    pub model: ModelIdentity,
    pub settings: Settings,
    #[serde(flatten)]
    pub figures: Figures,
    /// 95 % bootstrap intervals of the headline figures, by headline id.
    pub confidence_intervals: BTreeMap<String, Interval>,
    pub slices: Vec<SliceFigures>,
    /// Present when the run had `--perturb`.
    pub perturbation: Option<Robustness>,
    /// Present when the run had `--baseline`.
    pub baseline: Option<Comparison>,
    pub throughput: Throughput,
}

/// Identity of the evaluated data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataIdentity {
    pub path: String,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    pub examples: usize,
}

/// Identity of the evaluated model: what it reports, and the checksums of its manifest and
/// rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelIdentity {
    pub name: String,
    pub version: String,
    /// Base encoder and checksum prefix.
    pub base: String,
    pub dir: String,
    /// SHA-256 of `manifest.json`, hex; changes whenever a threshold or head changes.
    pub manifest_sha256: Option<String>,
    /// SHA-256 of `rules.json`, hex: the rules can change urgency without a new manifest.
    pub rules_sha256: Option<String>,
    pub rules_version: Option<String>,
}

impl ModelIdentity {
    /// Identity of the model in `dir`, as `info` describes it.
    pub fn new(info: ModelInfo, dir: &Path) -> Result<ModelIdentity> {
        let checksum = |name: &str| {
            let path = dir.join(name);
            path.exists().then(|| sha256_file(&path)).transpose()
        };
        Ok(ModelIdentity {
            name: info.name,
            version: info.version,
            base: info.base,
            dir: dir.display().to_string(),
            manifest_sha256: checksum(MANIFEST_FILE)?,
            rules_sha256: checksum(RULES_FILE)?,
            rules_version: Some(info.rules),
        })
    }
}

/// Settings of the run, to reproduce it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Seed of the perturbations and of the bootstrap.
    pub seed: u64,
    pub bootstrap_resamples: usize,
    pub batch_size: usize,
    pub perturb: bool,
    pub calibration_bins: usize,
}

/// Speed of the classification calls, perturbed copies included.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub messages: usize,
    pub seconds: f64,
    pub messages_per_second: Option<f64>,
    pub batch_size: usize,
}

/// Figures on perturbed copies and how far they fall from the clean messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Robustness {
    pub seed: u64,
    /// One entry per perturbation kind, then `all` for every copy together.
    pub variants: Vec<VariantFigures>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VariantFigures {
    /// `accents`, `sms`, `typos`, `case` or `all`.
    pub kind: String,
    /// French name shown in the HTML report.
    pub label: String,
    /// Perturbed copies; sources whose text the perturbation left unchanged have none.
    pub examples: usize,
    /// Each headline figure on the sources of these copies, and on the copies.
    pub falls: Vec<Fall>,
    /// Every figure on the copies.
    pub figures: Figures,
}

/// One headline figure before and after a perturbation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fall {
    pub figure: String,
    /// On the unaltered source messages.
    pub clean: Option<f64>,
    /// On the perturbed copies.
    pub perturbed: Option<f64>,
    /// `perturbed − clean`.
    pub change: Option<f64>,
    /// True when the change makes the figure worse.
    pub worse: bool,
}

/// Hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    utc_timestamp(seconds)
}

/// Formats seconds since 1970 as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian calendar).
pub fn utc_timestamp(seconds: u64) -> String {
    let (days, rest) = ((seconds / 86_400) as i64, seconds % 86_400);
    // Civil date from a day count, after Howard Hinnant's `civil_from_days`.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_767_225_599), "2025-12-31T23:59:59Z");
    }
}
