//! `report.html`: one self-contained page in French for the helpline's data staff. Styles and
//! charts (inline SVG) are inside the page, which loads nothing and runs no script. So it opens
//! offline and can be mailed as it is.
//!
//! Order: the headline figures with their confidence intervals, the baseline verdict, then the
//! charts, the per-label and per-slice tables, robustness, and a reading guide. The page shows
//! example ids, never message texts: those stay in `errors.jsonl`.

use std::fmt::Write;

use anyhow::Result;

use super::baseline::Comparison;
use super::errors::ErrorRecord;
use super::figures::{to_value, Figures, Headline, Unit, HEADLINES};
use super::french::{count_change, decimal, percent, points, signed_decimal};
use super::metrics::{LabelFigures, SingleLabelFigures};
use super::plots;
use super::report_json::{Report, Robustness};
use super::ERRORS_FILE;
use crate::triage::taxonomy::{index_of, CATEGORIES, URGENCIES};

/// Slices smaller than this are flagged as too small to trust.
const SMALL_SLICE: usize = 20;

/// Errors listed in the page; the rest are in `errors.jsonl`.
const LISTED_ERRORS: usize = 15;

const STYLE: &str = r#"
:root { --red: #c53030; --green: #2f855a; --orange: #c05621; --grey: #4a5568; --line: #e2e8f0; }
* { box-sizing: border-box; }
body { font-family: system-ui, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: #1a202c;
       margin: 0 auto; padding: 24px 32px 48px; max-width: 1240px; line-height: 1.45; background: #fff; }
h1 { font-size: 28px; margin: 0 0 4px; }
h2 { font-size: 22px; margin: 40px 0 8px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 17px; margin: 24px 0 6px; }
p.meta, p.note, .small { color: var(--grey); font-size: 14px; }
code { font-size: 13px; background: #f7fafc; padding: 1px 4px; border-radius: 3px; }
.cards { display: grid; grid-template-columns: repeat(4, 1fr); gap: 12px; margin-top: 12px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; background: #fbfcfd; }
.card.safety { border-left: 5px solid var(--red); }
.card .name { font-size: 14px; font-weight: 600; color: var(--grey); }
.card .value { font-size: 30px; font-weight: 700; margin: 2px 0; }
.card .ci { font-size: 13px; color: var(--grey); }
.card .explain { font-size: 13px; margin-top: 6px; }
.verdict { padding: 12px 16px; border-radius: 8px; font-weight: 600; margin: 16px 0; }
.verdict.pass { background: #f0fff4; border: 1px solid var(--green); color: #22543d; }
.verdict.fail { background: #fff5f5; border: 1px solid var(--red); color: #742a2a; }
.warning { background: #fffaf0; border: 1px solid var(--orange); padding: 8px 12px; border-radius: 6px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: right; vertical-align: top; }
th { background: #f7fafc; font-weight: 600; }
th:first-child, td:first-child, tr.left th { text-align: left; }
td.text { text-align: left; }
td.nowrap { white-space: nowrap; }
.legend { list-style: none; padding: 0; margin: 4px 0; font-size: 14px; display: flex; flex-wrap: wrap; gap: 4px 18px; }
.swatch { display: inline-block; width: 22px; height: 4px; vertical-align: middle; margin-right: 6px; }
.swatch.dashed { border-top: 3px dashed #718096; height: 0; }
tr.small-slice td { color: #a0aec0; }
.worse { color: var(--red); font-weight: 600; }
.better { color: var(--green); }
.chart { margin: 8px 0 4px; }
.chart svg { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 6px; }
.two { display: grid; grid-template-columns: 1fr 1fr; gap: 24px; align-items: start; }
dl dt { font-weight: 600; margin-top: 10px; }
dl dd { margin: 2px 0 0 18px; }
footer { margin-top: 40px; font-size: 13px; color: var(--grey); border-top: 1px solid var(--line); padding-top: 8px; }
"#;

/// Renders the page.
pub fn render(report: &Report, errors: &[ErrorRecord]) -> Result<String> {
    let mut page = String::with_capacity(200_000);
    let model = &report.model;
    let _ = writeln!(
        page,
        "<!DOCTYPE html>\n<html lang=\"fr\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Rapport d'évaluation — {} {}</title>\n<style>{STYLE}</style>\n</head>\n<body>",
        escape(&model.name),
        escape(&model.version)
    );
    header(&mut page, report);
    headline_cards(&mut page, report);
    if let Some(comparison) = &report.baseline {
        baseline(&mut page, comparison);
    }
    categories(&mut page, &report.figures)?;
    urgency(&mut page, &report.figures)?;
    calibration(&mut page, &report.figures)?;
    single_label_section(&mut page, "Intention", &report.figures.intent);
    single_label_section(&mut page, "Auteur du message", &report.figures.speaker);
    slices(&mut page, report);
    if let Some(robustness) = &report.perturbation {
        robustness_section(&mut page, robustness);
    }
    top_errors(&mut page, errors);
    guide(&mut page);
    footer(&mut page, report);
    page.push_str("</body>\n</html>\n");
    Ok(page)
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Shows a headline figure in its unit.
fn show(headline: &Headline, value: Option<f64>) -> String {
    match headline.unit {
        Unit::Rate => percent(value),
        Unit::Score => decimal(value, 3),
        Unit::Count => value.map_or("—".into(), |v| format!("{v:.0}")),
    }
}

/// Shows a change of a headline figure in its unit.
fn show_change(headline: &Headline, change: Option<f64>) -> String {
    match headline.unit {
        Unit::Rate => points(change),
        Unit::Score => signed_decimal(change, 3),
        Unit::Count => count_change(change),
    }
}

fn explanation(id: &str) -> &'static str {
    match id {
        "critical_recall" => "Part des messages critiques que le modèle classe bien « critique ». Le chiffre à protéger d'abord.",
        "severe_under_triage" => "Messages d'urgence élevée ou critique classés « faible » : ils attendraient dans la file ordinaire.",
        "severe_under_triage_rate" => "Les mêmes sous-triages graves, rapportés au nombre de messages élevés ou critiques.",
        "under_triage_rate" => "Part des messages dont l'urgence prédite est plus basse que la bonne.",
        "critical_precision" => "Parmi les messages classés « critique », part qui l'est vraiment (les fausses alertes la font baisser).",
        "urgency_accuracy" => "Part des messages dont le niveau d'urgence est exactement le bon.",
        "macro_f1" => "Qualité moyenne par catégorie : chaque catégorie compte autant, même rare.",
        "micro_f1" => "Qualité sur toutes les décisions de catégorie : les catégories fréquentes pèsent plus.",
        "exact_match" => "Part des messages dont la liste de catégories est exactement la bonne.",
        "intent_accuracy" => "Part des messages dont l'intention (aide, conseil, écoutant…) est la bonne.",
        "speaker_accuracy" => "Part des messages dont l'auteur (jeune, parent, autre) est le bon.",
        "categories_ece" => "Écart moyen entre le score des catégories et la réalité : 0 = scores fiables.",
        "urgency_ece" => "Même mesure pour le niveau d'urgence proposé par le modèle, avant les règles.",
        _ => "",
    }
}

fn is_safety(id: &str) -> bool {
    matches!(id, "critical_recall" | "severe_under_triage" | "severe_under_triage_rate" | "under_triage_rate")
}

fn header(page: &mut String, report: &Report) {
    let model = &report.model;
    let _ = writeln!(
        page,
        "<header>\n<h1>Rapport d'évaluation du tri des messages</h1>\n\
         <p class=\"meta\">Modèle <b>{} {}</b> (encodeur {}) · Données <code>{}</code> : {} messages · \
         Rapport produit le {} (UTC)</p>\n</header>",
        escape(&model.name),
        escape(&model.version),
        escape(&model.base),
        escape(&report.data.path),
        report.data.examples,
        escape(&report.generated_at.replace('T', " à ").replace('Z', "")),
    );
}

fn headline_cards(page: &mut String, report: &Report) {
    let figures = to_value(&report.figures);
    page.push_str("<section id=\"essentiel\">\n<h2>L'essentiel</h2>\n");
    let _ = writeln!(
        page,
        "<p class=\"note\">Chiffres calculés sur les {} messages annotés. Sous chaque chiffre, l'intervalle de \
         confiance à 95 % (IC) : plus il est large, moins le chiffre est sûr, en général faute d'exemples. \
         Bordure rouge : chiffres de sécurité (urgence).</p>\n<div class=\"cards\">",
        report.figures.examples
    );
    for headline in HEADLINES {
        let interval = report.confidence_intervals.get(headline.id).map_or_else(
            || "IC non calculé".to_string(),
            |i| format!("IC 95 % : {} à {}", show(&headline, Some(i.low)), show(&headline, Some(i.high))),
        );
        let _ = writeln!(
            page,
            "<div class=\"card{}\"><div class=\"name\">{}</div><div class=\"value\">{}</div>\
             <div class=\"ci\">{}</div><div class=\"explain\">{}</div></div>",
            if is_safety(headline.id) { " safety" } else { "" },
            escape(headline.label),
            show(&headline, headline.value(&figures)),
            interval,
            escape(explanation(headline.id)),
        );
    }
    page.push_str("</div>\n</section>\n");
}

fn baseline(page: &mut String, comparison: &Comparison) {
    page.push_str("<section id=\"comparaison\">\n<h2>Comparaison avec le modèle de référence</h2>\n");
    let name = |key: &str| comparison.baseline_model.get(key).and_then(|v| v.as_str()).unwrap_or("?").to_string();
    let _ = writeln!(
        page,
        "<p class=\"note\">Référence : <code>{}</code> (modèle {} {}). Tolérance du garde-fou : {}.</p>",
        escape(&comparison.path),
        escape(&name("name")),
        escape(&name("version")),
        points(Some(comparison.tolerance)).trim_start_matches(['+', '±'])
    );
    if !comparison.same_data {
        page.push_str(
            "<p class=\"warning\">Attention : la référence a été calculée sur un autre fichier de données. \
             Les écarts mélangent l'effet du modèle et celui des données.</p>\n",
        );
    }
    if comparison.passed {
        page.push_str(
            "<p class=\"verdict pass\">Garde-fou respecté : ni le rappel des urgences critiques ni les sous-triages \
             graves ne se dégradent au-delà de la tolérance.</p>\n",
        );
    } else {
        page.push_str("<div class=\"verdict fail\">Régression de sécurité : ce modèle ne doit pas remplacer la référence.<ul>\n");
        for failure in &comparison.failures {
            let headline = Headline::find(&failure.figure).expect("guard figures are headlines");
            let _ = writeln!(
                page,
                "<li>{} : {} → {}</li>",
                escape(headline.label),
                show(headline, failure.baseline),
                show(headline, failure.current)
            );
        }
        page.push_str("</ul></div>\n");
    }
    page.push_str("<table>\n<tr><th>Indicateur</th><th>Référence</th><th>Ce modèle</th><th>Écart</th></tr>\n");
    for delta in &comparison.deltas {
        let Some(headline) = Headline::find(&delta.figure) else { continue };
        let improved = delta.baseline.zip(delta.current).is_some_and(|(b, c)| headline.is_worse(c, b));
        let class = if delta.worse {
            "worse"
        } else if improved {
            "better"
        } else {
            ""
        };
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td></tr>",
            escape(headline.label),
            show(headline, delta.baseline),
            show(headline, delta.current),
            show_change(headline, delta.delta)
        );
    }
    page.push_str("</table>\n<p class=\"small\">En rouge : le chiffre se dégrade ; en vert : il s'améliore.</p>\n</section>\n");
}

fn label_table(page: &mut String, first_column: &str, rows: &[LabelFigures]) {
    let _ = writeln!(
        page,
        "<table>\n<tr><th>{first_column}</th><th>Précision</th><th>Rappel</th><th>F1</th>\
         <th>Exemples annotés</th><th>Prédits</th></tr>"
    );
    for row in rows {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&row.label),
            percent(row.precision),
            percent(row.recall),
            decimal(row.f1, 2),
            row.support,
            row.predicted
        );
    }
    page.push_str("</table>\n");
}

fn categories(page: &mut String, figures: &Figures) -> Result<()> {
    page.push_str("<section id=\"categories\">\n<h2>Catégories : F1 par catégorie</h2>\n");
    page.push_str(
        "<p class=\"note\">Une barre par catégorie ; n = nombre de messages annotés avec cette catégorie. \
         Rouge sous 0,5, orange sous 0,8, vert au-delà. « sans exemple » : catégorie ni annotée ni prédite.</p>\n",
    );
    let _ = writeln!(page, "<div class=\"chart\">{}</div>", plots::category_f1_bars(figures)?);
    label_table(page, "Catégorie", &figures.categories);
    page.push_str("</section>\n");
    Ok(())
}

fn urgency(page: &mut String, figures: &Figures) -> Result<()> {
    page.push_str("<section id=\"urgence\">\n<h2>Urgence</h2>\n<div class=\"two\">\n<div>\n");
    let _ = writeln!(page, "<div class=\"chart\">{}</div>", plots::urgency_heatmap(&figures.confusion)?);
    page.push_str("</div>\n<div>\n");
    page.push_str(
        "<p>Chaque ligne regroupe les messages d'un niveau annoté ; chaque colonne, le niveau choisi par le modèle. \
         La case indique le nombre de messages et leur part dans la ligne.</p>\n\
         <ul><li><b>Vert</b> (diagonale) : bon niveau.</li>\
         <li><b>Rouge</b> (à gauche de la diagonale) : <b>sous-triage</b>, le message paraît moins urgent qu'il ne l'est. \
         C'est l'erreur dangereuse.</li>\
         <li><b>Orange</b> (à droite) : sur-triage, le message paraît plus urgent ; cela coûte du temps d'écoutant, \
         pas de la sécurité.</li></ul>\n",
    );
    let _ = writeln!(
        page,
        "<table>\n<tr><th>Indicateur</th><th>Valeur</th></tr>\n\
         <tr><td>Exactitude de l'urgence</td><td>{}</td></tr>\n\
         <tr><td>Taux de sous-triage</td><td>{}</td></tr>\n\
         <tr><td>Taux de sur-triage</td><td>{}</td></tr>\n\
         <tr><td>Sous-triages graves (élevé ou critique → faible)</td><td>{} sur {}</td></tr>\n\
         <tr><td>Rappel des urgences critiques</td><td>{}</td></tr>\n\
         <tr><td>Précision des urgences critiques</td><td>{}</td></tr>\n</table>",
        percent(figures.urgency.accuracy),
        percent(figures.under_triage_rate),
        percent(figures.urgency.over_triage_rate),
        figures.severe_under_triage,
        figures.urgency.high_or_critical,
        percent(figures.critical.recall),
        percent(figures.critical.precision),
    );
    page.push_str("</div>\n</div>\n<h3>Par niveau</h3>\n");
    label_table(page, "Niveau", &figures.urgency.per_level);
    page.push_str("</section>\n");
    Ok(())
}

fn calibration(page: &mut String, figures: &Figures) -> Result<()> {
    page.push_str("<section id=\"calibration\">\n<h2>Fiabilité des scores (calibration)</h2>\n<div class=\"two\">\n<div>\n");
    let _ = writeln!(page, "<div class=\"chart\">{}</div>", plots::reliability_diagram(&figures.calibration)?);
    page.push_str("<ul class=\"legend\"><li><span class=\"swatch dashed\"></span>Calibration parfaite</li>");
    for (name, reliability, colour) in plots::reliability_curves(&figures.calibration) {
        let _ = write!(
            page,
            "<li><span class=\"swatch\" style=\"background:{}\"></span>{name} (ECE {})</li>",
            plots::css_colour(colour),
            decimal(reliability.ece, 3)
        );
    }
    page.push_str("</ul>\n</div>\n<div>\n");
    page.push_str(
        "<p>Les scores sont regroupés par tranches de 0,1. Pour chaque tranche, le point montre le score moyen \
         (horizontal) et la part de réponses justes (vertical). Sur la diagonale grise, un score de 0,8 est juste \
         8 fois sur 10 : on peut s'y fier. Sous la diagonale, le modèle est trop sûr de lui ; au-dessus, pas assez.</p>\n\
         <p>L'erreur de calibration (ECE) résume l'écart moyen : 0 est parfait.</p>\n",
    );
    let c = &figures.calibration;
    page.push_str("<table>\n<tr><th>Sortie du modèle</th><th>ECE</th><th>Scores</th></tr>\n");
    for (name, reliability) in [
        ("Catégories (chaque score de catégorie)", &c.categories),
        ("Urgence (niveau proposé avant règles)", &c.urgency),
        ("Intention", &c.intent),
        ("Auteur", &c.speaker),
    ] {
        let _ = writeln!(
            page,
            "<tr><td>{name}</td><td>{}</td><td>{}</td></tr>",
            decimal(reliability.ece, 3),
            reliability.samples
        );
    }
    page.push_str("</table>\n</div>\n</div>\n</section>\n");
    Ok(())
}

fn single_label_section(page: &mut String, title: &str, figures: &SingleLabelFigures) {
    let _ = writeln!(
        page,
        "<section>\n<h2>{title}</h2>\n<p>Exactitude : <b>{}</b> · F1 macro : <b>{}</b></p>",
        percent(figures.accuracy),
        decimal(figures.macro_f1, 3)
    );
    label_table(page, "Étiquette", &figures.per_label);
    page.push_str("</section>\n");
}

fn slices(page: &mut String, report: &Report) {
    page.push_str("<section id=\"tranches\">\n<h2>Par tranche de messages</h2>\n");
    let _ = writeln!(
        page,
        "<p class=\"note\">Les mêmes chiffres, recalculés sur une partie des messages : selon l'auteur, selon les \
         étiquettes d'annotation (tags) et selon la longueur. Une tranche nettement plus basse que « Tous » montre \
         où le modèle peine. En gris : moins de {SMALL_SLICE} messages, chiffres fragiles.</p>"
    );
    page.push_str(
        "<table>\n<tr><th>Tranche</th><th>Messages</th><th>F1 macro</th><th>F1 micro</th><th>Catégories exactes</th>\
         <th>Urgence exacte</th><th>Rappel critique</th><th>Sous-triage</th><th>Sous-triages graves</th>\
         <th>Intention exacte</th><th>ECE catégories</th></tr>\n",
    );
    let row = |page: &mut String, name: &str, class: &str, f: &Figures| {
        let _ = writeln!(
            page,
            "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            name,
            f.examples,
            decimal(f.macro_f1, 2),
            decimal(f.micro_f1, 2),
            percent(f.exact_match),
            percent(f.urgency.accuracy),
            percent(f.critical.recall),
            percent(f.under_triage_rate),
            f.severe_under_triage,
            percent(f.intent.accuracy),
            decimal(f.calibration.categories.ece, 3),
        );
    };
    row(page, "<b>Tous les messages</b>", "", &report.figures);
    let mut group = "";
    for slice in &report.slices {
        if slice.group != group {
            group = &slice.group;
            let title = match group {
                "speaker" => "Auteur",
                "tag" => "Étiquette d'annotation (tag)",
                "length" => "Longueur",
                other => other,
            };
            let _ = writeln!(page, "<tr><th colspan=\"11\">{}</th></tr>", escape(title));
        }
        let class = if slice.figures.examples < SMALL_SLICE { "small-slice" } else { "" };
        let name = format!("{} <span class=\"small\">{}</span>", escape(&slice.label), escape(&slice.name));
        row(page, &name, class, &slice.figures);
    }
    page.push_str("</table>\n</section>\n");
}

fn robustness_section(page: &mut String, robustness: &Robustness) {
    page.push_str("<section id=\"robustesse\">\n<h2>Robustesse : messages modifiés</h2>\n");
    let _ = writeln!(
        page,
        "<p class=\"note\">Chaque message est recopié en version modifiée (accents supprimés, écriture SMS, fautes \
         de frappe, majuscules) avec les mêmes bonnes réponses, puis réévalué (graine {}). Chaque case donne le \
         chiffre sur les messages d'origine → sur les copies, puis l'écart (en rouge s'il se dégrade). Une copie \
         identique à l'original n'est pas comptée.</p>",
        robustness.seed
    );
    page.push_str("<table>\n<tr><th>Indicateur</th>");
    for variant in &robustness.variants {
        let _ = write!(page, "<th>{}<br><span class=\"small\">{} copies</span></th>", escape(&variant.label), variant.examples);
    }
    page.push_str("</tr>\n");
    for headline in HEADLINES {
        let _ = write!(page, "<tr><td>{}</td>", escape(headline.label));
        for variant in &robustness.variants {
            match variant.falls.iter().find(|f| f.figure == headline.id) {
                Some(fall) => {
                    let _ = write!(
                        page,
                        "<td class=\"nowrap\">{} → {}<br><span class=\"{}\">{}</span></td>",
                        show(&headline, fall.clean),
                        show(&headline, fall.perturbed),
                        if fall.worse { "worse" } else { "small" },
                        show_change(&headline, fall.change)
                    );
                }
                None => page.push_str("<td>—</td>"),
            }
        }
        page.push_str("</tr>\n");
    }
    page.push_str("</table>\n</section>\n");
}

fn danger_label(danger: &str) -> &'static str {
    match danger {
        "under_triage_critical" => "Critique sous-estimé",
        "severe_under_triage" => "Sous-triage grave",
        "under_triage" => "Sous-triage",
        "missed_category" => "Catégorie manquée",
        _ => "Autre erreur",
    }
}

fn category_labels(ids: impl Iterator<Item = String>) -> String {
    let labels: Vec<String> = ids
        .map(|id| index_of(&CATEGORIES, &id).map_or(id.clone(), |i| CATEGORIES[i].label.to_string()))
        .collect();
    if labels.is_empty() {
        "—".into()
    } else {
        escape(&labels.join(", "))
    }
}

fn urgency_label(id: &str) -> String {
    index_of(&URGENCIES, id).map_or_else(|| escape(id), |i| URGENCIES[i].label.to_string())
}

fn top_errors(page: &mut String, errors: &[ErrorRecord]) {
    let originals: Vec<&ErrorRecord> = errors.iter().filter(|e| e.variant == "original").collect();
    let copies = errors.len() - originals.len();
    let _ = writeln!(
        page,
        "<section id=\"erreurs\">\n<h2>Les erreurs les plus dangereuses</h2>\n<p class=\"note\">{} messages mal \
         classés, du plus dangereux au moins dangereux : d'abord les messages critiques sous-estimés, puis les \
         sous-triages graves. Voici les {} premiers, par identifiant ; leurs textes, leurs scores et la liste \
         complète sont dans <code>{ERRORS_FILE}</code>, à côté de ce rapport{}.</p>",
        originals.len(),
        originals.len().min(LISTED_ERRORS),
        if copies > 0 { format!(", avec les {copies} erreurs sur les copies modifiées") } else { String::new() },
    );
    if originals.is_empty() {
        page.push_str("<p>Aucune erreur.</p>\n</section>\n");
        return;
    }
    page.push_str(
        "<table>\n<tr class=\"left\"><th>Identifiant</th><th>Gravité</th><th>Urgence annotée → prédite</th>\
         <th>Catégories manquées</th><th>Catégories en trop</th><th>Autres erreurs</th></tr>\n",
    );
    for error in originals.into_iter().take(LISTED_ERRORS) {
        let missed = error.mistakes.iter().filter_map(|m| m.strip_prefix("category_missed:")).map(String::from);
        let extra = error.mistakes.iter().filter_map(|m| m.strip_prefix("category_extra:")).map(String::from);
        let mut other = Vec::new();
        if error.gold.intent != error.predicted.intent {
            other.push("intention");
        }
        if error.gold.speaker != error.predicted.speaker {
            other.push("auteur");
        }
        let _ = writeln!(
            page,
            "<tr><td><code>{}</code></td><td class=\"text\">{}</td><td class=\"text\">{} → {}</td>\
             <td class=\"text\">{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td></tr>",
            escape(&error.id),
            danger_label(&error.danger),
            urgency_label(&error.gold.urgency),
            urgency_label(&error.predicted.urgency),
            category_labels(missed),
            category_labels(extra),
            if other.is_empty() { "—".to_string() } else { other.join(", ") },
        );
    }
    page.push_str("</table>\n</section>\n");
}

fn guide(page: &mut String) {
    page.push_str(
        "<section id=\"lecture\">\n<h2>Comment lire ce rapport</h2>\n<dl>\n\
         <dt>Précision</dt><dd>Parmi les messages que le modèle range dans une étiquette, la part qui y est vraiment.</dd>\n\
         <dt>Rappel</dt><dd>Parmi les messages qui portent vraiment une étiquette, la part que le modèle retrouve. \
         Pour l'urgence critique, c'est le chiffre qui compte le plus : un message critique manqué n'est pas vu à temps.</dd>\n\
         <dt>F1</dt><dd>Combine précision et rappel en un seul chiffre entre 0 et 1. Le F1 macro fait la moyenne des \
         catégories (une catégorie rare compte autant qu'une fréquente) ; le F1 micro compte toutes les décisions \
         ensemble.</dd>\n\
         <dt>Sous-triage</dt><dd>Le modèle donne une urgence plus basse que la bonne. Un sous-triage grave est un \
         message d'urgence élevée ou critique classé « faible ».</dd>\n\
         <dt>Intervalle de confiance (IC 95 %)</dt><dd>Obtenu en retirant au hasard, 1 000 fois par défaut, des \
         échantillons de messages (bootstrap). Si l'on refaisait l'évaluation sur d'autres messages du même genre, \
         le chiffre tomberait dans cet intervalle 95 fois sur 100.</dd>\n\
         <dt>Calibration (ECE)</dt><dd>Écart moyen entre le score annoncé par le modèle et la part de réponses justes. \
         Des scores bien calibrés permettent de régler les seuils et de repérer les cas incertains.</dd>\n\
         <dt>Comparaison</dt><dd>Avec une référence, le rapport montre l'écart de chaque chiffre. Le garde-fou refuse un \
         modèle dont le rappel critique baisse, ou dont les sous-triages graves augmentent, au-delà de la tolérance.</dd>\n\
         </dl>\n</section>\n",
    );
}

fn footer(page: &mut String, report: &Report) {
    let t = &report.throughput;
    let s = &report.settings;
    let _ = writeln!(
        page,
        "<footer>Débit : {} messages classés en {} s ({} messages par seconde, lots de {}). \
         Graine {} · {} tirages bootstrap · {} tranches de calibration. \
         Empreintes SHA-256 des données : <code>{}</code> · du manifeste du modèle : <code>{}</code> · \
         de ses règles : <code>{}</code>. Format du rapport : {}.</footer>",
        t.messages,
        decimal(Some(t.seconds), 1),
        decimal(t.messages_per_second, 1),
        t.batch_size,
        s.seed,
        s.bootstrap_resamples,
        s.calibration_bins,
        escape(&report.data.sha256),
        escape(report.model.manifest_sha256.as_deref().unwrap_or("absente")),
        escape(report.model.rules_sha256.as_deref().unwrap_or("absente")),
        escape(&report.format),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_markup() {
        assert_eq!(escape(r#"<a href="x">l'é & co</a>"#), "&lt;a href=&quot;x&quot;&gt;l&#39;é &amp; co&lt;/a&gt;");
    }
}
