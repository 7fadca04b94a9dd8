//! Outgoing PDUs of one connection, gathered into one socket send.
//!
//! Headers, digests, padding and small payloads go into the message's heap
//! head; bulk read data stays in its pool buffer and is referenced by a body
//! segment, so Data-In never copies read data. While one send is on the wire
//! the next PDUs accumulate, and go out together when it completes.

use trellis_datapath::{Buf, SendMsg, SendSeg};

use crate::pdu::{data_digest_unpadded, header_digest, padded, Digests, BHS_LEN};

/// Queue of outgoing PDUs.
#[derive(Debug, Default)]
pub struct Outbox {
    msg: SendMsg,
    spare: Option<SendMsg>,
    digests: Digests,
    pdus: usize,
}

impl Outbox {
    /// Sets the digests in force (after login).
    pub fn set_digests(&mut self, digests: Digests) {
        self.digests = digests;
    }

    /// Whether anything is queued.
    pub fn is_empty(&self) -> bool {
        self.msg.segs.is_empty()
    }

    /// PDUs queued.
    pub fn len(&self) -> usize {
        self.pdus
    }

    fn head_seg(&mut self, start: usize) {
        let len = self.msg.head.len() - start;
        if len == 0 {
            return;
        }
        // Merge with a directly preceding head segment.
        if let Some(SendSeg::Head { start: s, len: l }) = self.msg.segs.last_mut() {
            if (*s + *l) as usize == start {
                *l += len as u32;
                return;
            }
        }
        self.msg.segs.push(SendSeg::Head {
            start: start as u32,
            len: len as u32,
        });
    }

    fn push_header(&mut self, bhs: &[u8; BHS_LEN]) {
        self.msg.head.extend_from_slice(bhs);
        if self.digests.header {
            self.msg
                .head
                .extend_from_slice(&header_digest(bhs).to_le_bytes());
        }
    }

    fn push_pad_digest(&mut self, data: &[u8]) {
        let pad = padded(data.len()) - data.len();
        self.msg.head.extend_from_slice(&[0u8; 3][..pad]);
        if self.digests.data && !data.is_empty() {
            self.msg
                .head
                .extend_from_slice(&data_digest_unpadded(data).to_le_bytes());
        }
    }

    /// Queues a PDU whose data (if any) is copied into the head.
    pub fn push(&mut self, bhs: &[u8; BHS_LEN], data: &[u8]) {
        let start = self.msg.head.len();
        self.push_header(bhs);
        self.msg.head.extend_from_slice(data);
        self.push_pad_digest(data);
        self.head_seg(start);
        self.pdus += 1;
    }

    /// Adds a body buffer the following [`Outbox::push_body`] calls refer to;
    /// returns its index.
    pub fn add_body(&mut self, buf: Buf) -> u16 {
        self.msg.bodies.push(buf);
        (self.msg.bodies.len() - 1) as u16
    }

    /// Queues a PDU whose data is `len` bytes of body `body` from `start`.
    pub fn push_body(&mut self, bhs: &[u8; BHS_LEN], body: u16, start: usize, len: usize) {
        let hstart = self.msg.head.len();
        self.push_header(bhs);
        self.head_seg(hstart);
        let Some(buf) = self.msg.bodies.get(usize::from(body)) else {
            return;
        };
        let end = (start + len).min(buf.len());
        let start = start.min(end);
        let pad = padded(end - start) - (end - start);
        let digest = self
            .digests
            .data
            .then(|| data_digest_unpadded(&buf[start..end]));
        self.msg.segs.push(SendSeg::Body {
            buf: body,
            start: start as u32,
            len: (end - start) as u32,
        });
        let tail = self.msg.head.len();
        self.msg.head.extend_from_slice(&[0u8; 3][..pad]);
        if let Some(d) = digest {
            if end > start {
                self.msg.head.extend_from_slice(&d.to_le_bytes());
            }
        }
        self.head_seg(tail);
        self.pdus += 1;
    }

    /// Takes everything queued as one message, or `None` if empty.
    pub fn take(&mut self) -> Option<SendMsg> {
        if self.is_empty() {
            return None;
        }
        let next = self.spare.take().unwrap_or_default();
        self.pdus = 0;
        Some(std::mem::replace(&mut self.msg, next))
    }

    /// Returns a sent message so its vectors are reused (its buffers go back
    /// to the pool here).
    pub fn recycle(&mut self, mut msg: SendMsg) {
        msg.head.clear();
        msg.bodies.clear();
        msg.segs.clear();
        if self.spare.is_none() {
            self.spare = Some(msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_datapath::{BufPool, PoolConfig};

    fn flatten(msg: &SendMsg) -> Vec<u8> {
        let mut out = Vec::new();
        for s in &msg.segs {
            match *s {
                SendSeg::Head { start, len } => {
                    out.extend_from_slice(&msg.head[start as usize..(start + len) as usize])
                }
                SendSeg::Body { buf, start, len } => out.extend_from_slice(
                    &msg.bodies[usize::from(buf)][start as usize..(start + len) as usize],
                ),
            }
        }
        out
    }

    #[test]
    fn body_pdus_match_copied_pdus() {
        let pool = BufPool::new(&PoolConfig {
            classes: vec![(4096, 1)],
        })
        .unwrap();
        let mut buf = pool.get(4096).unwrap();
        for (i, b) in buf.iter_mut().enumerate() {
            *b = i as u8;
        }
        let data: Vec<u8> = buf[1000..1999].to_vec();
        let bhs = [7u8; BHS_LEN];
        for digests in [
            Digests::default(),
            Digests {
                header: true,
                data: true,
            },
        ] {
            let mut a = Outbox::default();
            a.set_digests(digests);
            a.push(&bhs, &data);
            a.push(&bhs, &[]);
            let mut b = Outbox::default();
            b.set_digests(digests);
            let mut buf2 = pool_clone(&buf, &pool);
            buf2.set_len(4096);
            let idx = b.add_body(buf2);
            b.push_body(&bhs, idx, 1000, 999);
            b.push(&bhs, &[]);
            assert_eq!(a.len(), 2);
            let ma = a.take().unwrap();
            let mb = b.take().unwrap();
            assert_eq!(flatten(&ma), flatten(&mb));
            let mut expect = Vec::new();
            crate::pdu::write_pdu(&bhs, &data, digests, &mut expect);
            crate::pdu::write_pdu(&bhs, &[], digests, &mut expect);
            assert_eq!(flatten(&ma), expect);
            assert!(a.take().is_none());
            a.recycle(ma);
            drop(mb);
        }
    }

    fn pool_clone(src: &Buf, _pool: &BufPool) -> Buf {
        // The pool holds one buffer: free the source's copy through a Vec.
        let copy = src.to_vec();
        let pool = BufPool::new(&PoolConfig {
            classes: vec![(4096, 1)],
        })
        .unwrap();
        let mut b = pool.get(4096).unwrap();
        b.copy_from_slice(&copy);
        b
    }
}
