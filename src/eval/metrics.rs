//! Classification metrics on label positions: precision, recall and F1 per label, their micro
//! and macro averages, accuracy, exact match and confusion matrices.
//!
//! A ratio whose denominator is zero is `None` (JSON `null`), never 0 or NaN. So a label that
//! no example has and the model never predicts has no F1, and it is left out of the macro
//! average instead of pulling it down. F1 is computed as `2·TP / (2·TP + FP + FN)`, so it is 0,
//! not undefined, for a label that was predicted but never right, or present but never found.

use serde::{Deserialize, Serialize};

use crate::triage::taxonomy::Label;

/// Outcome counts of one binary decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
}

impl Counts {
    pub fn add(&mut self, gold: bool, predicted: bool) {
        match (gold, predicted) {
            (true, true) => self.true_positives += 1,
            (false, true) => self.false_positives += 1,
            (true, false) => self.false_negatives += 1,
            (false, false) => {}
        }
    }

    pub fn precision(&self) -> Option<f64> {
        ratio(self.true_positives, self.true_positives + self.false_positives)
    }

    pub fn recall(&self) -> Option<f64> {
        ratio(self.true_positives, self.true_positives + self.false_negatives)
    }

    pub fn f1(&self) -> Option<f64> {
        let tp2 = 2 * self.true_positives;
        ratio(tp2, tp2 + self.false_positives + self.false_negatives)
    }

    /// Number of gold positives.
    pub fn support(&self) -> usize {
        self.true_positives + self.false_negatives
    }

    /// Number of predicted positives.
    pub fn predicted(&self) -> usize {
        self.true_positives + self.false_positives
    }
}

/// `numerator / denominator`, or `None` when the denominator is zero.
pub fn ratio(numerator: usize, denominator: usize) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

/// Mean of the defined values, `None` when none is.
pub fn mean_defined(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let defined: Vec<f64> = values.into_iter().flatten().collect();
    (!defined.is_empty()).then(|| defined.iter().sum::<f64>() / defined.len() as f64)
}

/// Precision, recall and F1 of one label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelFigures {
    pub id: String,
    /// French display label.
    pub label: String,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
    /// Examples whose gold labels hold this label.
    pub support: usize,
    /// Examples for which the model predicted this label.
    pub predicted: usize,
}

impl LabelFigures {
    pub fn new(label: &Label, counts: &Counts) -> LabelFigures {
        LabelFigures {
            id: label.id.to_string(),
            label: label.label.to_string(),
            precision: counts.precision(),
            recall: counts.recall(),
            f1: counts.f1(),
            support: counts.support(),
            predicted: counts.predicted(),
        }
    }
}

/// Figures of a multi-label head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiLabelFigures {
    pub per_label: Vec<LabelFigures>,
    /// Mean F1 over the labels that are gold or predicted at least once.
    pub macro_f1: Option<f64>,
    /// F1 of the pooled counts of every label.
    pub micro_f1: Option<f64>,
    /// Share of examples whose predicted set equals the gold set exactly.
    pub exact_match: Option<f64>,
}

/// Scores a multi-label head. Each pair contains the gold and predicted membership of every
/// label of `labels`, in order. An empty prediction is a false negative for each gold label.
pub fn multi_label<'a>(
    labels: &[Label],
    pairs: impl IntoIterator<Item = (&'a [bool], &'a [bool])>,
) -> MultiLabelFigures {
    let mut counts = vec![Counts::default(); labels.len()];
    let (mut examples, mut exact) = (0, 0);
    for (gold, predicted) in pairs {
        debug_assert_eq!(gold.len(), labels.len());
        debug_assert_eq!(predicted.len(), labels.len());
        examples += 1;
        exact += usize::from(gold == predicted);
        for (count, (&g, &p)) in counts.iter_mut().zip(gold.iter().zip(predicted)) {
            count.add(g, p);
        }
    }
    let mut pooled = Counts::default();
    for count in &counts {
        pooled.true_positives += count.true_positives;
        pooled.false_positives += count.false_positives;
        pooled.false_negatives += count.false_negatives;
    }
    MultiLabelFigures {
        per_label: labels.iter().zip(&counts).map(|(l, c)| LabelFigures::new(l, c)).collect(),
        macro_f1: mean_defined(counts.iter().map(Counts::f1)),
        micro_f1: pooled.f1(),
        exact_match: ratio(exact, examples),
    }
}

/// Counts of gold label (row) against predicted label (column).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confusion {
    /// Label ids, the order of both rows and columns.
    pub labels: Vec<String>,
    /// `matrix[gold][predicted]`: every label has a row and a column, even one that never occurs.
    pub matrix: Vec<Vec<usize>>,
}

impl Confusion {
    pub fn new(labels: &[Label], pairs: impl IntoIterator<Item = (usize, usize)>) -> Confusion {
        let mut matrix = vec![vec![0; labels.len()]; labels.len()];
        for (gold, predicted) in pairs {
            matrix[gold][predicted] += 1;
        }
        Confusion { labels: labels.iter().map(|l| l.id.to_string()).collect(), matrix }
    }

    pub fn total(&self) -> usize {
        self.matrix.iter().flatten().sum()
    }

    pub fn correct(&self) -> usize {
        (0..self.labels.len()).map(|i| self.matrix[i][i]).sum()
    }

    /// One-vs-rest counts of label `index`.
    pub fn counts(&self, index: usize) -> Counts {
        let row: usize = self.matrix[index].iter().sum();
        let column: usize = self.matrix.iter().map(|r| r[index]).sum();
        let true_positives = self.matrix[index][index];
        Counts {
            true_positives,
            false_positives: column - true_positives,
            false_negatives: row - true_positives,
        }
    }
}

/// Figures of a single-label head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SingleLabelFigures {
    pub accuracy: Option<f64>,
    /// Mean F1 over the labels that are gold or predicted at least once.
    pub macro_f1: Option<f64>,
    pub per_label: Vec<LabelFigures>,
    pub confusion: Confusion,
}

/// Scores a single-label head from (gold, predicted) label positions.
pub fn single_label(labels: &[Label], pairs: impl IntoIterator<Item = (usize, usize)>) -> SingleLabelFigures {
    let confusion = Confusion::new(labels, pairs);
    let counts: Vec<Counts> = (0..labels.len()).map(|i| confusion.counts(i)).collect();
    SingleLabelFigures {
        accuracy: ratio(confusion.correct(), confusion.total()),
        macro_f1: mean_defined(counts.iter().map(Counts::f1)),
        per_label: labels.iter().zip(&counts).map(|(l, c)| LabelFigures::new(l, c)).collect(),
        confusion,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::triage::taxonomy::URGENCIES;

    const ABC: [Label; 3] = [
        Label { id: "a", label: "A" },
        Label { id: "b", label: "B" },
        Label { id: "c", label: "C" },
    ];

    fn close(actual: Option<f64>, expected: f64) {
        let actual = actual.expect("defined");
        assert!((actual - expected).abs() < 1e-12, "{actual} != {expected}");
    }

    #[test]
    fn multi_label_with_an_empty_prediction() {
        // Example 1: gold {a, b}, predicted {a}      → a: TP, b: FN
        // Example 2: gold {c},    predicted {}       → c: FN (the empty prediction)
        // Example 3: gold {a},    predicted {a, c}   → a: TP, c: FP
        let gold = [[true, true, false], [false, false, true], [true, false, false]];
        let predicted = [[true, false, false], [false, false, false], [true, false, true]];
        let figures = multi_label(&ABC, gold.iter().zip(&predicted).map(|(g, p)| (&g[..], &p[..])));

        let [a, b, c] = &figures.per_label[..] else { panic!() };
        // a: TP 2, FP 0, FN 0.
        close(a.precision, 1.0);
        close(a.recall, 1.0);
        close(a.f1, 1.0);
        assert_eq!((a.support, a.predicted), (2, 2));
        // b: TP 0, FP 0, FN 1: never predicted, so precision is undefined and F1 is 0.
        assert_eq!(b.precision, None);
        close(b.recall, 0.0);
        close(b.f1, 0.0);
        // c: TP 0, FP 1, FN 1.
        close(c.precision, 0.0);
        close(c.recall, 0.0);
        close(c.f1, 0.0);
        // Macro: (1 + 0 + 0) / 3. Micro: TP 2, FP 1, FN 2 → 4 / (4 + 1 + 2).
        close(figures.macro_f1, 1.0 / 3.0);
        close(figures.micro_f1, 4.0 / 7.0);
        // No example matches exactly.
        close(figures.exact_match, 0.0);
    }

    #[test]
    fn macro_f1_skips_absent_labels() {
        // c is neither gold nor predicted anywhere: its F1 is undefined, not 0.
        let gold = [[true, false, false], [false, true, false]];
        let predicted = [[true, false, false], [true, false, false]];
        let figures = multi_label(&ABC, gold.iter().zip(&predicted).map(|(g, p)| (&g[..], &p[..])));
        // a: TP 1, FP 1 → F1 2/3. b: FN 1 → F1 0. Macro over {a, b} = 1/3.
        assert_eq!(figures.per_label[2].f1, None);
        close(figures.macro_f1, 1.0 / 3.0);
        close(figures.exact_match, 0.5);
    }

    #[test]
    fn confusion_with_a_missing_class() {
        // No gold `critical` and no predicted `critical`: its row and column stay, full of zeros.
        // (gold, predicted) as urgency positions: low 0, medium 1, high 2, critical 3.
        let pairs = [(0, 0), (0, 0), (0, 1), (1, 1), (1, 0), (2, 1), (2, 2)];
        let figures = single_label(&URGENCIES, pairs);
        assert_eq!(
            figures.confusion.matrix,
            vec![vec![2, 1, 0, 0], vec![1, 1, 0, 0], vec![0, 1, 1, 0], vec![0, 0, 0, 0]]
        );
        close(figures.accuracy, 4.0 / 7.0);
        let critical = &figures.per_label[3];
        assert_eq!((critical.precision, critical.recall, critical.f1), (None, None, None));
        assert_eq!((critical.support, critical.predicted), (0, 0));
        // low: TP 2, FP 1, FN 1 → 4/6. medium: TP 1, FP 2, FN 1 → 2/5. high: TP 1, FN 1 → 2/3.
        close(figures.per_label[0].f1, 4.0 / 6.0);
        close(figures.per_label[1].f1, 2.0 / 5.0);
        close(figures.per_label[2].f1, 2.0 / 3.0);
        close(figures.macro_f1, (4.0 / 6.0 + 2.0 / 5.0 + 2.0 / 3.0) / 3.0);
    }

    #[test]
    fn empty_input_has_no_figures() {
        let figures = single_label(&ABC, []);
        assert_eq!((figures.accuracy, figures.macro_f1), (None, None));
        let figures = multi_label(&ABC, std::iter::empty());
        assert_eq!((figures.macro_f1, figures.micro_f1, figures.exact_match), (None, None, None));
    }
}
