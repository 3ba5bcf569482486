//! Cutting token streams into rows.
//!
//! Windows of `seq_len + 1` tokens with stride `seq_len`: `input_ids = w[..seq_len]`,
//! `labels = w[1..]`, mask all ones, so consecutive rows overlap by one token. A final window
//! of `k ≥ 2` tokens becomes a partial row: `k - 1` positions with mask 1, the rest pad.
//! In stream packing documents flow into each other; in document packing every document ends
//! its last window.

/// One row, borrowed from the packer.
pub struct Row<'a> {
    /// `input_ids`.
    pub input_ids: &'a [i32],
    /// `attention_mask`.
    pub attention_mask: &'a [i32],
    /// `labels`.
    pub labels: &'a [i32],
}

/// Turns tokens into rows.
#[derive(Debug, Clone)]
pub struct Packer {
    seq_len: usize,
    pad_id: i32,
    carry: Vec<i32>,
    ids: Vec<i32>,
    mask: Vec<i32>,
    labels: Vec<i32>,
    /// A full window was emitted and its first `seq_len` tokens still sit in `carry`.
    emitted: bool,
}

impl Packer {
    /// A packer for rows of `seq_len`, padding with `pad_id`, starting with `carry` (tokens
    /// not yet emitted: empty for a fresh start, or saved state when resuming).
    pub fn new(seq_len: usize, pad_id: u32, carry: Vec<i32>) -> Packer {
        Packer {
            seq_len,
            pad_id: pad_id as i32,
            carry,
            ids: vec![0; seq_len],
            mask: vec![0; seq_len],
            labels: vec![0; seq_len],
            emitted: false,
        }
    }

    /// Tokens waiting for the next row (at most `seq_len`): the state to save.
    pub fn carry(&self) -> &[i32] {
        if self.emitted {
            &self.carry[self.seq_len..]
        } else {
            &self.carry
        }
    }

    fn settle(&mut self) {
        if self.emitted {
            self.carry.drain(..self.seq_len);
            self.emitted = false;
        }
    }

    /// Consumes `tokens[*pos..]` until a row completes and returns it, advancing `*pos`;
    /// `None` once the tokens are used up without completing a row.
    pub fn next_row(&mut self, tokens: &[i32], pos: &mut usize) -> Option<Row<'_>> {
        self.settle();
        let window = self.seq_len + 1;
        let take = (window - self.carry.len()).min(tokens.len().saturating_sub(*pos));
        self.carry.extend_from_slice(&tokens[*pos..*pos + take]);
        *pos += take;
        if self.carry.len() == window {
            self.fill(window);
            self.emitted = true;
            Some(self.row())
        } else {
            None
        }
    }

    /// The partial window left over as a row, if it holds at least two tokens; clears it.
    pub fn flush(&mut self) -> Option<Row<'_>> {
        self.settle();
        let k = self.carry.len();
        if k >= 2 {
            self.fill(k);
            self.carry.clear();
            Some(self.row())
        } else {
            self.carry.clear();
            None
        }
    }

    fn fill(&mut self, k: usize) {
        let valid = k - 1;
        for j in 0..self.seq_len {
            if j < valid {
                self.ids[j] = self.carry[j];
                self.labels[j] = self.carry[j + 1];
                self.mask[j] = 1;
            } else {
                self.ids[j] = self.pad_id;
                self.labels[j] = self.pad_id;
                self.mask[j] = 0;
            }
        }
    }

    fn row(&self) -> Row<'_> {
        Row {
            input_ids: &self.ids,
            attention_mask: &self.mask,
            labels: &self.labels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(
        packer: &mut Packer,
        docs: &[Vec<i32>],
        per_doc_flush: bool,
    ) -> Vec<(Vec<i32>, Vec<i32>, Vec<i32>)> {
        let mut out = Vec::new();
        for doc in docs {
            let mut pos = 0;
            while let Some(r) = packer.next_row(doc, &mut pos) {
                out.push((
                    r.input_ids.to_vec(),
                    r.attention_mask.to_vec(),
                    r.labels.to_vec(),
                ));
            }
            assert_eq!(pos, doc.len());
            if per_doc_flush {
                if let Some(r) = packer.flush() {
                    out.push((
                        r.input_ids.to_vec(),
                        r.attention_mask.to_vec(),
                        r.labels.to_vec(),
                    ));
                }
            }
        }
        if let Some(r) = packer.flush() {
            out.push((
                r.input_ids.to_vec(),
                r.attention_mask.to_vec(),
                r.labels.to_vec(),
            ));
        }
        out
    }

    #[test]
    fn stream_windows_overlap_by_one_and_pad_the_last() {
        let mut p = Packer::new(3, 99, Vec::new());
        let got = rows(&mut p, &[vec![1, 2, 3], vec![4, 5, 6, 7, 8]], false);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], (vec![1, 2, 3], vec![1, 1, 1], vec![2, 3, 4]));
        assert_eq!(got[1], (vec![4, 5, 6], vec![1, 1, 1], vec![5, 6, 7]));
        assert_eq!(got[2], (vec![7, 99, 99], vec![1, 0, 0], vec![8, 99, 99]));
    }

    #[test]
    fn a_single_leftover_token_is_not_a_row() {
        let mut p = Packer::new(3, 99, Vec::new());
        let got = rows(&mut p, &[vec![1, 2, 3, 4]], false);
        assert_eq!(got.len(), 1);
        assert!(p.carry().is_empty());
    }

    #[test]
    fn document_mode_pads_each_document() {
        let mut p = Packer::new(4, 0, Vec::new());
        let got = rows(&mut p, &[vec![1, 2, 3], vec![4, 5, 6, 7, 8, 9]], true);
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0],
            (vec![1, 2, 0, 0], vec![1, 1, 0, 0], vec![2, 3, 0, 0])
        );
        assert_eq!(got[1], (vec![4, 5, 6, 7], vec![1; 4], vec![5, 6, 7, 8]));
        assert_eq!(
            got[2],
            (vec![8, 0, 0, 0], vec![1, 0, 0, 0], vec![9, 0, 0, 0])
        );
    }

    #[test]
    fn carry_after_a_row_is_the_overlap_token() {
        let mut p = Packer::new(2, 0, Vec::new());
        let mut pos = 0;
        assert!(p.next_row(&[1, 2, 3, 4], &mut pos).is_some());
        assert_eq!(pos, 3);
        assert_eq!(p.carry(), &[3]);
        // Resuming from that carry gives the same next row.
        let mut q = Packer::new(2, 0, p.carry().to_vec());
        let mut qpos = 3;
        let a = p
            .next_row(&[1, 2, 3, 4, 5], &mut pos)
            .map(|r| r.input_ids.to_vec());
        let b = q
            .next_row(&[1, 2, 3, 4, 5], &mut qpos)
            .map(|r| r.input_ids.to_vec());
        assert_eq!(a, b);
    }
}
