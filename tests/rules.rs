//! The committed rule set (models/cybertriage-fr/rules.json) on invented messages: each rule
//! fires on the wordings it is meant for and stays quiet on everyday look-alikes.

use cybertriage::model::base::default_models_dir;
use cybertriage::triage::classifier::default_model_dir;
use cybertriage::triage::normalize::normalize;
use cybertriage::triage::rules::RuleSet;

fn fired(rules: &RuleSet, text: &str) -> Vec<String> {
    rules.apply(&normalize(text)).fired
}

fn committed_rules() -> RuleSet {
    RuleSet::load(&default_model_dir(&default_models_dir()).join("rules.json")).unwrap()
}

/// Asserts that each rule id fires on its message.
fn assert_fires(rules: &RuleSet, cases: &[(&str, &str)]) {
    for (text, rule) in cases {
        assert!(fired(rules, text).iter().any(|id| id == rule), "{rule} did not fire on {text:?}");
    }
}

#[test]
fn rules_fire_on_their_wordings() {
    let rules = committed_rules();
    let cases = [
        ("jai envie d'en finir", "explicit_suicidal_wording"),
        ("je veux disparaître, personne me calcule", "explicit_suicidal_wording"),
        ("je vois qu'une seule solution maintenant", "explicit_suicidal_wording"),
        ("jai avalé tout le tube de mélatonine, c grave ?", "overdose_taken"),
        ("g pris 2 plaquettes de mon traitement ya 1h, jvois trouble", "overdose_taken"),
        ("pardon maman 💔", "farewell_message"),
        ("j'ai écrit une lettre d'adieu", "farewell_message"),
        ("ils sont en train de frapper mon pote derrière le gymnase", "assault_in_progress"),
        ("il a 35 ans et il veut me voir samedi, il dit de rien dire à mes parents", "adult_secret_meeting"),
        ("il va publier mes nudes si je paye pas avant ce soir", "blackmail_deadline"),
    ];
    assert_fires(&rules, &cases);
}

#[test]
fn rules_stay_quiet_on_look_alikes() {
    let rules = committed_rules();
    let cases = [
        "j'ai pris un doliprane, je peux aller au sport ?",
        "la honte, jveux disparaître mdr",
        "adieu les gens, jpars 2 semaines au ski",
        "je suis mort de rire, mon chat est tombé du canapé",
        "on a regardé une vidéo où ils sont en train de frapper un sac de boxe",
        "ma mère fait un tajine ce soir trop hâte",
        "j'en peux plus de ce jeu, ce soir je poste les photos du tournoi",
        "je coupe les oignons 😭🔪",
        "mon bulletin 🪦 mdr",
        "💀💀💀 jsuis mort",
        "jcuisine des légumes 🔪😭 j'ai horreur de ça",
        "j'ai mes règles 🩸😭 trop mal au ventre",
        "prise de sang demain à l'hôpital 🩸😢",
        "ce soir c'est fini les vacances 😭",
        "ce soir c'est la fin du ramadan, on fête ça",
        "ce soir c'est la fin de la saison de ma série préférée 😭",
        "jpp de rire 😭🔪",
        "jpp xD je vais me tuer de rire",
        "il m'a tué de rire avec sa vidéo 😭🔪",
        "j'ai pris 2 doliprane pour ma migraine, je peux reprendre un café ?",
        "j'ai pris mes médocs ce matin comme d'hab",
    ];
    for text in cases {
        let critical: Vec<String> = rules
            .apply(&normalize(text))
            .raise
            .into_iter()
            .filter(|(level, _)| level.id() == "critical")
            .map(|(_, id)| id)
            .collect();
        assert!(critical.is_empty(), "{critical:?} raised {text:?} to critical");
    }
}

#[test]
fn rules_read_everyday_forms() {
    let rules = committed_rules();
    let cases = [
        ("un type de 40 ans que j'ai connu sur snap veut qu'on se voie samedi", "adult_secret_meeting"),
        ("il veut me voir à la gare sans que mes parents sachent", "adult_secret_meeting"),
        ("avant minuit il balance ma vidéo si je paye pas", "blackmail_deadline"),
        ("dites à mon père que je lui en veux pas", "farewell_message"),
        (
            "il veut 150 euros avant minuit sinon il envoie ma vidéo à ma famille, jpréfère crever que ma mère voie ça",
            "blackmail_deadline_despair",
        ),
        ("il a mes photos et il les poste ce soir si je paye pas, j'en peux plus", "blackmail_deadline_distress"),
        ("😭😭🔪🩸💀", "emoji_self_harm"),
        ("🪦🪦 bye tout le monde", "emoji_self_harm"),
        ("💊💊💊 💔", "emoji_self_harm"),
        ("jpp 😭🔪🩸", "emoji_self_harm"),
        ("jvais sauter du balcon jpp", "explicit_suicidal_wording"),
        ("il poste mes photos ce soir si je paye pas, jpp", "blackmail_deadline_distress"),
        ("ce soir c'est fini pour moi", "farewell_message"),
        ("ce soir ce sera fini, merci de m'avoir répondu", "farewell_message"),
        ("un mec de 35 ans vient me chercher ce soir, faut pas que mes parents sachent", "adult_secret_meeting"),
        ("encore un épisode de crise 🔪🩸😭", "emoji_self_harm"),
        ("une partie de moi veut plus vivre 🔪😭", "emoji_self_harm"),
        ("j'en peux plus des règles de mes parents 😭🔪🩸", "emoji_self_harm"),
        ("ce soir c'est fini… je vous aime", "farewell_message"),
        ("ce soir c'est fini 💔 je vous aime", "farewell_message"),
        ("ce soir c'est la fin de tout", "farewell_message"),
        ("ce soir c'est fini je vous aime tous", "farewell_message"),
        ("il a 30 ans, il passe me chercher à 17h, faut surtout pas que mes parents sachent", "adult_secret_meeting"),
        ("un homme de snap veut me voir, il faudrait pas que ma mère le sache", "adult_secret_meeting"),
        ("j'ai pris tous mes médocs d'un coup", "overdose_taken"),
        ("jai avalé 20 doliprane", "overdose_taken"),
        ("jme suicide ce soir", "explicit_suicidal_wording"),
        ("je me suicide, personne m'aime", "explicit_suicidal_wording"),
        ("je me tue ce soir", "explicit_suicidal_wording"),
        ("jme jette du pont cette nuit", "explicit_suicidal_wording"),
        ("ce soir je me tue", "explicit_suicidal_wording"),
        ("cette nuit jme jette du pont", "explicit_suicidal_wording"),
        ("je me tuerai ce soir", "explicit_suicidal_wording"),
        ("jme pend tt de suite", "explicit_suicidal_wording"),
        ("jvais me suicidé ce soir", "explicit_suicidal_wording"),
        ("j me sucide", "explicit_suicidal_wording"),
        ("jveux mourir ce soir, je me tue pas à la tâche", "explicit_suicidal_wording"),
        ("jme tu ce soir", "explicit_suicidal_wording"),
        ("jme jete du pont cette nuit", "explicit_suicidal_wording"),
        ("ce soir jme fous en lair", "explicit_suicidal_wording"),
        ("jm suicide ce soir", "explicit_suicidal_wording"),
        ("j vais me tuer", "explicit_suicidal_wording"),
        ("j'vais me tuer", "explicit_suicidal_wording"),
        ("jme tue dans 1h", "explicit_suicidal_wording"),
        ("jme tue dans une heure", "explicit_suicidal_wording"),
        ("jme tue à minuit", "explicit_suicidal_wording"),
        ("jvai me tuer", "explicit_suicidal_wording"),
        ("jvé me tuer", "explicit_suicidal_wording"),
        ("jvais mfoutre en lair", "explicit_suicidal_wording"),
        ("jvais m tuer ce soir", "explicit_suicidal_wording"),
        ("jpp jvais en finir ce soir", "explicit_suicidal_wording"),
        ("jveux en finir avec la vie", "explicit_suicidal_wording"),
    ];
    assert_fires(&rules, &cases);

    let quiet = [
        "dis à ma mère que je rentre à 19h, j'ai plus de batterie",
        "pardon maman pour le vase 😅",
        "je me tue à te le répéter, range ta chambre",
        "le contrôle de demain me tue",
        "je me jette sur la pizza ce soir",
        "je me tus et je partis",
        "tu me tues ce soir avec tes blagues",
        "je vais en finir avec ce boss ce soir",
        "jvais en finir avec mes devoirs",
    ];
    for text in quiet {
        assert!(fired(&rules, text).is_empty(), "a rule fired on {text:?}");
    }
}
