//! The report's charts, drawn as SVG strings with plotters and inlined into the HTML page, so
//! the page needs no file, font or script beside it.
//!
//! Text is in French. Sizes are in SVG pixels; the page scales the charts to its width.

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::figures::{Calibration, Figures};
use super::french::{decimal, percent};
use super::calibration::Reliability;
use super::metrics::Confusion;
use crate::triage::taxonomy::URGENCIES;

const FONT: &str = "sans-serif";
const BLUE: RGBColor = RGBColor(0x2b, 0x6c, 0xb0);
const RED: RGBColor = RGBColor(0xc5, 0x30, 0x30);
const GREEN: RGBColor = RGBColor(0x2f, 0x85, 0x5a);
const ORANGE: RGBColor = RGBColor(0xdd, 0x6b, 0x20);
const PURPLE: RGBColor = RGBColor(0x6b, 0x46, 0xc1);
const GREY: RGBColor = RGBColor(0x71, 0x80, 0x96);

/// Renders a chart into an SVG string of `size` pixels.
fn svg(size: (u32, u32), draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<()>) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    Ok(out)
}

/// Horizontal bars of F1 per category, in scheme order from the top, with support counts.
pub fn category_f1_bars(figures: &Figures) -> Result<String> {
    let rows = &figures.categories;
    let n = rows.len() as i32;
    let height = 60 + 30 * rows.len() as u32;
    // Row `i` of the list is drawn at segment `n - 1 - i`, so the list reads from the top.
    let row_at = |segment: i32| rows.get((n - 1 - segment) as usize);
    svg((900, height), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(330)
            // A discrete i32 range includes its end, so 0..n - 1 has n segments.
            .build_cartesian_2d(0f64..1.08f64, (0..n - 1).into_segmented())?;
        let label = |v: &SegmentValue<i32>| match v {
            SegmentValue::CenterOf(s) => row_at(*s).map_or(String::new(), |r| format!("{} (n = {})", r.label, r.support)),
            _ => String::new(),
        };
        let tick = |v: &f64| if *v <= 1.0 { decimal(Some(*v), 1) } else { String::new() };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(rows.len())
            .y_label_formatter(&label)
            .x_labels(11)
            .x_label_formatter(&tick)
            .x_desc("F1 (0 = jamais juste, 1 = parfait)")
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 14))
            .light_line_style(TRANSPARENT)
            .draw()?;
        let value_style = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        for segment in 0..n {
            let row = row_at(segment).expect("segment in range");
            let centre = SegmentValue::CenterOf(segment);
            match row.f1 {
                Some(f1) => {
                    let colour = if f1 < 0.5 { RED } else if f1 < 0.8 { ORANGE } else { GREEN };
                    let mut bar = Rectangle::new(
                        [(0.0, SegmentValue::Exact(segment)), (f1, SegmentValue::Exact(segment + 1))],
                        colour.filled(),
                    );
                    bar.set_margin(5, 5, 0, 0);
                    chart.draw_series([bar])?;
                    chart.draw_series([Text::new(decimal(Some(f1), 2), (f1 + 0.01, centre.clone()), value_style.clone())])?;
                }
                None => {
                    chart.draw_series([Text::new("sans exemple".to_string(), (0.01, centre), value_style.clone())])?;
                }
            }
        }
        Ok(())
    })
}

/// Draws the urgency confusion matrix as a heatmap: gold levels in rows (low at the top),
/// predicted levels in columns. Each cell shows its count and its share of the row. Under-triage cells
/// (left of the diagonal) are red, over-triage cells orange, and correct levels green.
pub fn urgency_heatmap(confusion: &Confusion) -> Result<String> {
    let n = URGENCIES.len() as i32;
    svg((640, 520), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .margin_right(20)
            .x_label_area_size(70)
            .y_label_area_size(130)
            .build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())?;
        let level = |v: &SegmentValue<i32>, flip: bool| match v {
            SegmentValue::CenterOf(i) if (0..n).contains(i) => {
                URGENCIES[if flip { (n - 1 - i) as usize } else { *i as usize }].label.to_string()
            }
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(URGENCIES.len())
            .y_labels(URGENCIES.len())
            .x_label_formatter(&|v| level(v, false))
            .y_label_formatter(&|v| level(v, true))
            .x_desc("Urgence prédite par le modèle")
            .y_desc("Urgence annotée (la bonne réponse)")
            .label_style((FONT, 18))
            .axis_desc_style((FONT, 18))
            .draw()?;
        let count_style = TextStyle::from((FONT, 26).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
        let share_style = TextStyle::from((FONT, 17).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        for gold in 0..n {
            let row = &confusion.matrix[gold as usize];
            let total: usize = row.iter().sum();
            for predicted in 0..n {
                let count = row[predicted as usize];
                let share = (total > 0).then(|| count as f64 / total as f64);
                let hue = match predicted.cmp(&gold) {
                    std::cmp::Ordering::Less => RED,
                    std::cmp::Ordering::Equal => GREEN,
                    std::cmp::Ordering::Greater => ORANGE,
                };
                // Empty cells stay almost white; a full row shows the hue at 85 %.
                let opacity = 0.06 + 0.79 * share.unwrap_or(0.0);
                let y = n - 1 - gold;
                let mut cell = Rectangle::new(
                    [(SegmentValue::Exact(predicted), SegmentValue::Exact(y)), (SegmentValue::Exact(predicted + 1), SegmentValue::Exact(y + 1))],
                    hue.mix(opacity).filled(),
                );
                cell.set_margin(2, 2, 2, 2);
                chart.draw_series([cell])?;
                let text_colour = if opacity > 0.5 { WHITE } else { BLACK };
                let centre = (SegmentValue::CenterOf(predicted), SegmentValue::CenterOf(y));
                chart.draw_series([Text::new(count.to_string(), centre.clone(), count_style.color(&text_colour))])?;
                let share = if total > 0 { percent(share) } else { String::new() };
                chart.draw_series([Text::new(share, centre, share_style.color(&text_colour))])?;
            }
        }
        Ok(())
    })
}

/// Lists the curves of the reliability diagram: French name, reliability, colour. The page
/// draws the legend from this list, outside the chart, so that it never hides a point.
pub fn reliability_curves(calibration: &Calibration) -> [(&'static str, &Reliability, RGBColor); 4] {
    [
        ("Catégories", &calibration.categories, BLUE),
        ("Urgence (avant règles)", &calibration.urgency, RED),
        ("Intention", &calibration.intent, PURPLE),
        ("Auteur", &calibration.speaker, GREEN),
    ]
}

/// Colour as CSS `#rrggbb`.
pub fn css_colour(colour: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", colour.0, colour.1, colour.2)
}

/// Draws the reliability diagram: for each head, the share of correct predictions against the
/// mean score of each bin, with the dashed diagonal of perfect calibration. Empty bins are
/// skipped.
pub fn reliability_diagram(calibration: &Calibration) -> Result<String> {
    svg((640, 560), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .margin_right(25)
            .x_label_area_size(65)
            .y_label_area_size(80)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        let tick = |v: &f64| decimal(Some(*v), 1);
        chart
            .configure_mesh()
            .x_labels(11)
            .y_labels(11)
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .x_desc("Score donné par le modèle (moyenne du groupe)")
            .y_desc("Part de réponses justes")
            .label_style((FONT, 17))
            .axis_desc_style((FONT, 18))
            .light_line_style(TRANSPARENT)
            .draw()?;
        chart.draw_series(DashedLineSeries::new([(0.0, 0.0), (1.0, 1.0)], 6, 4, GREY.stroke_width(2)))?;
        for (_, reliability, colour) in reliability_curves(calibration) {
            let points: Vec<(f64, f64)> =
                reliability.bins.iter().filter_map(|b| b.confidence.zip(b.accuracy)).collect();
            chart.draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?;
            chart.draw_series(points.into_iter().map(|p| Circle::new(p, 5, colour.filled())))?;
        }
        Ok(())
    })
}
