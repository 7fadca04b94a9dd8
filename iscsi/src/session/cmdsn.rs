//! Command numbering: RFC 1982 serial arithmetic and the CmdSN window
//! (RFC 7143 §4.2.2.1, §3.2.2.1).

/// `a < b` in 32-bit serial number arithmetic.
pub fn sn_lt(a: u32, b: u32) -> bool {
    a != b && b.wrapping_sub(a) < 0x8000_0000
}

/// `a <= b` in serial number arithmetic.
pub fn sn_le(a: u32, b: u32) -> bool {
    a == b || sn_lt(a, b)
}

/// Where a received CmdSN falls relative to the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The next expected command: execute it now.
    InOrder,
    /// Inside the window but ahead of ExpCmdSN: hold it until the gap fills.
    Ahead,
    /// Outside the window (a duplicate or beyond MaxCmdSN): silently ignore.
    Outside,
}

/// The session-wide CmdSN window: ExpCmdSN and MaxCmdSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    exp: u32,
    depth: u32,
}

impl Window {
    /// Starts the window at the CmdSN of the login (`first`), `depth` deep.
    pub fn new(first: u32, depth: u32) -> Self {
        Self {
            exp: first,
            depth: depth.max(1),
        }
    }

    /// ExpCmdSN: the next CmdSN the target expects.
    pub fn exp_cmdsn(&self) -> u32 {
        self.exp
    }

    /// MaxCmdSN: the last CmdSN the initiator may send.
    pub fn max_cmdsn(&self) -> u32 {
        self.exp.wrapping_add(self.depth - 1)
    }

    /// Classifies a non-immediate command's CmdSN.
    pub fn admit(&self, cmdsn: u32) -> Admit {
        if cmdsn == self.exp {
            Admit::InOrder
        } else if sn_lt(self.exp, cmdsn) && sn_le(cmdsn, self.max_cmdsn()) {
            Admit::Ahead
        } else {
            Admit::Outside
        }
    }

    /// Accepts the in-order command: ExpCmdSN moves on by one.
    pub fn advance(&mut self) {
        self.exp = self.exp.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_arithmetic_wraps() {
        assert!(sn_lt(1, 2));
        assert!(!sn_lt(2, 1));
        assert!(sn_lt(u32::MAX, 0));
        assert!(sn_lt(0xffff_fff0, 5));
        assert!(!sn_lt(5, 5));
        assert!(sn_le(5, 5));
    }

    #[test]
    fn window_table() {
        // (exp, depth, cmdsn) -> admit
        let table = [
            (10, 4, 10, Admit::InOrder),
            (10, 4, 11, Admit::Ahead),
            (10, 4, 13, Admit::Ahead),
            (10, 4, 14, Admit::Outside),
            (10, 4, 9, Admit::Outside),
            (u32::MAX, 4, u32::MAX, Admit::InOrder),
            (u32::MAX, 4, 1, Admit::Ahead),
            (u32::MAX, 4, 2, Admit::Ahead),
            (u32::MAX, 4, 3, Admit::Outside),
            (0, 1, 1, Admit::Outside),
        ];
        for (exp, depth, sn, want) in table {
            assert_eq!(
                Window::new(exp, depth).admit(sn),
                want,
                "exp {exp} depth {depth} sn {sn}"
            );
        }
        let mut w = Window::new(u32::MAX, 8);
        assert_eq!(w.max_cmdsn(), 6);
        w.advance();
        assert_eq!((w.exp_cmdsn(), w.max_cmdsn()), (0, 7));
    }
}
