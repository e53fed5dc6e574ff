//! The label scheme (v1): stable English ids for the API and French display labels for the
//! helpline's staff. The order of each list is the order of the head outputs, so it is part of
//! the model format: append new labels at the end and retrain.

use serde::Serialize;

/// One label of a list: the stable id used in the API and the French display label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Label {
    pub id: &'static str,
    pub label: &'static str,
}

const fn label(id: &'static str, label: &'static str) -> Label {
    Label { id, label }
}

pub const SCHEME_VERSION: &str = "v1";

/// Multi-label categories: the concern(s) a message is about.
pub const CATEGORIES: [Label; 14] = [
    label("harassment", "Cyberharcèlement"),
    label("sexism", "Cybersexisme"),
    label("sextortion", "Chantage à la webcam / sextorsion"),
    label("intimate_images", "Diffusion d'images intimes"),
    label("grooming", "Pédopiégeage / exploitation sexuelle"),
    label("identity_theft", "Usurpation d'identité / piratage de compte"),
    label("hate_speech", "Haine en ligne"),
    label("threats", "Menaces et violences"),
    label("self_harm", "Idées suicidaires / automutilation"),
    label("shocking_content", "Contenus choquants"),
    label("scam", "Arnaque / escroquerie"),
    label("privacy", "Vie privée / données personnelles"),
    label("screen_use", "Usages numériques / écrans"),
    label("none", "Aucune cyberviolence"),
];

/// Id of the category that is never combined with another category.
pub const NONE_CATEGORY: &str = "none";

/// Intents: the request the person makes (single label).
pub const INTENTS: [Label; 6] = [
    label("seek_help", "Demande d'aide"),
    label("advice", "Demande de conseil"),
    label("talk_to_counselor", "Demande à parler à un écoutant"),
    label("information", "Demande d'information"),
    label("greeting", "Salutation"),
    label("other", "Autre"),
];

/// Intent id of a request for a human listener.
pub const TALK_TO_COUNSELOR: &str = "talk_to_counselor";

/// Urgency levels, ordered from least to most urgent: the index is the level's rank.
pub const URGENCIES: [Label; 4] = [
    label("low", "Faible"),
    label("medium", "Moyenne"),
    label("high", "Élevée"),
    label("critical", "Critique"),
];

/// Speakers: the writer of the message (single label).
pub const SPEAKERS: [Label; 3] = [
    label("young_person", "Jeune concerné·e"),
    label("parent", "Parent"),
    label("other", "Autre (ami·e, témoin, professionnel·le)"),
];

/// Optional tags on training and evaluation examples, used for slicing the evaluation.
pub const TAGS: [&str; 12] = [
    "sms",
    "non_fr",
    "mixed_lang",
    "hard_negative",
    "multi",
    "short",
    "long",
    "indirect",
    "friendly_grooming",
    "counter_speech",
    "quote",
    "witness",
];

/// Urgency level, ordered so that `a < b` means `a` is less urgent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Urgency {
    Low = 0,
    Medium = 1,
    High = 2,
    Critical = 3,
}

impl Urgency {
    pub const ALL: [Urgency; 4] = [Urgency::Low, Urgency::Medium, Urgency::High, Urgency::Critical];

    pub fn from_index(index: usize) -> Option<Urgency> {
        Self::ALL.get(index).copied()
    }

    pub fn from_id(id: &str) -> Option<Urgency> {
        URGENCIES.iter().position(|l| l.id == id).and_then(Self::from_index)
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn id(self) -> &'static str {
        URGENCIES[self.index()].id
    }

    pub fn label(self) -> &'static str {
        URGENCIES[self.index()].label
    }
}

/// Returns the position of `id` in `labels`, the index of its head output.
pub fn index_of(labels: &[Label], id: &str) -> Option<usize> {
    labels.iter().position(|l| l.id == id)
}

/// The whole scheme, as served by `GET /v1/labels` and written into model manifests.
#[derive(Debug, Clone, Serialize)]
pub struct Scheme {
    pub version: &'static str,
    pub categories: &'static [Label],
    pub intents: &'static [Label],
    pub urgencies: &'static [Label],
    pub speakers: &'static [Label],
}

pub fn scheme() -> Scheme {
    Scheme {
        version: SCHEME_VERSION,
        categories: &CATEGORIES,
        intents: &INTENTS,
        urgencies: &URGENCIES,
        speakers: &SPEAKERS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urgency_order_matches_list() {
        for (i, level) in Urgency::ALL.iter().enumerate() {
            assert_eq!(level.index(), i);
            assert_eq!(Urgency::from_id(level.id()), Some(*level));
        }
        assert!(Urgency::Low < Urgency::Critical);
    }

    #[test]
    fn ids_are_unique_per_list() {
        for list in [&CATEGORIES[..], &INTENTS[..], &URGENCIES[..], &SPEAKERS[..]] {
            let mut ids: Vec<_> = list.iter().map(|l| l.id).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), list.len());
        }
    }
}
