//! Slices of the evaluation set: by speaker, by tag and by length. A model can look fine on the
//! whole set and fail on SMS spelling or on witnesses' messages; each slice gets every figure.
//!
//! Slices overlap (an example has one speaker, any number of tags and one length), and a slice
//! with no example is left out.

use serde::{Deserialize, Serialize};

use super::example::Example;
use super::figures::Figures;
use super::outcome::Outcome;
use crate::triage::taxonomy::{SPEAKERS, TAGS};

/// Length buckets in words: (id, first, last). The first and last match the `short` (≤ 5
/// words) and `long` (≥ 80 words) tags of the labeling rules.
pub const LENGTH_BUCKETS: [(&str, usize, usize); 4] =
    [("1-5", 1, 5), ("6-20", 6, 20), ("21-79", 21, 79), ("80+", 80, usize::MAX)];

/// Figures of one slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceFigures {
    /// `group:name`, such as `tag:sms` or `length:1-5`.
    pub id: String,
    /// `speaker`, `tag` or `length`.
    pub group: String,
    pub name: String,
    /// French name shown in the HTML report.
    pub label: String,
    #[serde(flatten)]
    pub figures: Figures,
}

/// A slice: its names and the positions of its examples.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    pub group: &'static str,
    pub name: String,
    pub label: String,
    pub members: Vec<usize>,
}

/// Lists the non-empty slices of `examples`: speakers in scheme order, tags in scheme order
/// then any other tag alphabetically, then lengths.
pub fn slices(examples: &[Example]) -> Vec<Slice> {
    let select = |keep: &dyn Fn(&Example) -> bool| -> Vec<usize> {
        examples.iter().enumerate().filter(|(_, e)| keep(e)).map(|(i, _)| i).collect()
    };
    let mut out = Vec::new();
    for speaker in SPEAKERS {
        let members = select(&|e| e.speaker == speaker.id);
        out.push(Slice { group: "speaker", name: speaker.id.into(), label: speaker.label.into(), members });
    }
    let mut other_tags: Vec<&str> = examples
        .iter()
        .flat_map(|e| e.tags.iter().map(String::as_str))
        .filter(|t| !TAGS.contains(t))
        .collect();
    other_tags.sort_unstable();
    other_tags.dedup();
    for tag in TAGS.iter().copied().chain(other_tags) {
        let members = select(&|e| e.tags.iter().any(|t| t == tag));
        out.push(Slice { group: "tag", name: tag.into(), label: tag_label(tag).into(), members });
    }
    for (name, first, last) in LENGTH_BUCKETS {
        let members = select(&|e| (first..=last).contains(&e.word_count()));
        let label = if last == usize::MAX { format!("{first} mots et plus") } else { format!("{first} à {last} mots") };
        out.push(Slice { group: "length", name: name.into(), label, members });
    }
    out.retain(|s| !s.members.is_empty());
    out
}

impl Slice {
    pub fn id(&self) -> String {
        format!("{}:{}", self.group, self.name)
    }

    pub fn figures(&self, outcomes: &[Outcome]) -> SliceFigures {
        let members: Vec<&Outcome> = self.members.iter().map(|&i| &outcomes[i]).collect();
        SliceFigures {
            id: self.id(),
            group: self.group.into(),
            name: self.name.clone(),
            label: self.label.clone(),
            figures: Figures::compute(&members),
        }
    }
}

/// French name of a tag of the labeling rules; an unknown tag keeps its id.
pub fn tag_label(tag: &str) -> &str {
    match tag {
        "sms" => "Écriture SMS",
        "non_fr" => "Pas en français",
        "mixed_lang" => "Français mêlé d'une autre langue",
        "hard_negative" => "Mots violents sans danger (faux positifs attendus)",
        "multi" => "Plusieurs catégories",
        "short" => "Messages courts (tag)",
        "long" => "Messages longs (tag)",
        "indirect" => "Idées suicidaires formulées indirectement",
        "friendly_grooming" => "Pédopiégeage d'apparence amicale",
        "counter_speech" => "Contre-discours",
        "quote" => "Insultes rapportées",
        "witness" => "Écrit par un témoin",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(speaker: &str, tags: &[&str], words: usize) -> Example {
        Example {
            id: format!("{speaker}-{words}"),
            text: vec!["mot"; words].join(" "),
            categories: vec!["none".into()],
            intent: "other".into(),
            urgency: "low".into(),
            speaker: speaker.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn slices_by_speaker_tag_and_length() {
        let examples = [
            example("parent", &["sms", "short"], 3),
            example("young_person", &["sms", "custom"], 12),
            example("young_person", &[], 90),
        ];
        let found: Vec<(String, Vec<usize>)> = slices(&examples).into_iter().map(|s| (s.id(), s.members)).collect();
        assert_eq!(
            found,
            vec![
                ("speaker:young_person".into(), vec![1, 2]),
                ("speaker:parent".into(), vec![0]),
                ("tag:sms".into(), vec![0, 1]),
                ("tag:short".into(), vec![0]),
                ("tag:custom".into(), vec![1]),
                ("length:1-5".into(), vec![0]),
                ("length:6-20".into(), vec![1]),
                ("length:80+".into(), vec![2]),
            ]
        );
    }
}
