//! Aligned text tables for people: a header row, columns padded to their
//! widest cell, two spaces between columns, no trailing blanks.

/// A table being built row by row.
#[derive(Debug, Clone, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Adds a row (missing cells are blank).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as lines, each ending in a newline.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                let pad = width.saturating_sub(cell.chars().count());
                line.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Key-value lines with the keys aligned (for `status`).
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let mut t = Table::new(&["NAME", "SIZE", "FLAGS"]);
        t.row(vec!["d1".into(), "1 GiB".into(), "thin".into()]);
        t.row(vec!["database-01".into(), "512 MiB".into(), String::new()]);
        t.row(vec!["é".into()]);
        assert_eq!(
            t.render(),
            "NAME         SIZE     FLAGS\n\
             d1           1 GiB    thin\n\
             database-01  512 MiB\n\
             é\n"
        );
    }

    #[test]
    fn key_values_align() {
        assert_eq!(
            key_values(&[("term", "5".into()), ("leader", "m2".into())]),
            "term    5\nleader  m2\n"
        );
    }
}
