//! The login keys of RFC 7143 §12–§13: names, kinds, ranges, defaults and
//! result functions, plus the operational values they set.

/// Upper bound of the 24-bit length keys (MaxBurstLength and friends).
pub(crate) const MAX_LEN_24: u64 = 0x00ff_ffff;

/// How a key is treated during login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// InitiatorName, TargetName, SessionType, InitiatorAlias: identity declarations.
    Identity,
    /// AuthMethod and CHAP_*: security negotiation only.
    Security,
    /// A negotiated or declared operational key.
    Operational(OpKey),
    /// Keys only the target sends (TargetAlias, TargetAddress, TargetPortalGroupTag).
    TargetDeclared,
    /// Anything else, including X- and X# private keys.
    Unknown,
}

/// Operational keys (RFC 7143 §13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum OpKey {
    HeaderDigest,
    DataDigest,
    MaxConnections,
    SendTargets,
    InitialR2T,
    ImmediateData,
    MaxRecvDataSegmentLength,
    MaxBurstLength,
    FirstBurstLength,
    DefaultTime2Wait,
    DefaultTime2Retain,
    MaxOutstandingR2T,
    DataPduInOrder,
    DataSequenceInOrder,
    ErrorRecoveryLevel,
    TaskReporting,
    ProtocolLevel,
    IfMarker,
    OfMarker,
    IfMarkInt,
    OfMarkInt,
}

/// Result function of a numeric key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NumFn {
    Min,
    Max,
}

/// Result function of a boolean key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BoolFn {
    Or,
    And,
}

/// Classifies a key name.
pub(crate) fn classify(key: &str) -> KeyKind {
    use OpKey::*;
    let op = match key {
        "InitiatorName" | "TargetName" | "SessionType" | "InitiatorAlias" => {
            return KeyKind::Identity
        }
        "AuthMethod" | "CHAP_A" | "CHAP_I" | "CHAP_C" | "CHAP_N" | "CHAP_R" => {
            return KeyKind::Security
        }
        "TargetAlias" | "TargetAddress" | "TargetPortalGroupTag" => return KeyKind::TargetDeclared,
        "HeaderDigest" => HeaderDigest,
        "DataDigest" => DataDigest,
        "MaxConnections" => MaxConnections,
        "SendTargets" => SendTargets,
        "InitialR2T" => InitialR2T,
        "ImmediateData" => ImmediateData,
        "MaxRecvDataSegmentLength" => MaxRecvDataSegmentLength,
        "MaxBurstLength" => MaxBurstLength,
        "FirstBurstLength" => FirstBurstLength,
        "DefaultTime2Wait" => DefaultTime2Wait,
        "DefaultTime2Retain" => DefaultTime2Retain,
        "MaxOutstandingR2T" => MaxOutstandingR2T,
        "DataPDUInOrder" => DataPduInOrder,
        "DataSequenceInOrder" => DataSequenceInOrder,
        "ErrorRecoveryLevel" => ErrorRecoveryLevel,
        "TaskReporting" => TaskReporting,
        "iSCSIProtocolLevel" => ProtocolLevel,
        "IFMarker" => IfMarker,
        "OFMarker" => OfMarker,
        "IFMarkInt" => IfMarkInt,
        "OFMarkInt" => OfMarkInt,
        _ => return KeyKind::Unknown,
    };
    KeyKind::Operational(op)
}

impl OpKey {
    /// The key's name on the wire.
    pub(crate) fn name(self) -> &'static str {
        use OpKey::*;
        match self {
            HeaderDigest => "HeaderDigest",
            DataDigest => "DataDigest",
            MaxConnections => "MaxConnections",
            SendTargets => "SendTargets",
            InitialR2T => "InitialR2T",
            ImmediateData => "ImmediateData",
            MaxRecvDataSegmentLength => "MaxRecvDataSegmentLength",
            MaxBurstLength => "MaxBurstLength",
            FirstBurstLength => "FirstBurstLength",
            DefaultTime2Wait => "DefaultTime2Wait",
            DefaultTime2Retain => "DefaultTime2Retain",
            MaxOutstandingR2T => "MaxOutstandingR2T",
            DataPduInOrder => "DataPDUInOrder",
            DataSequenceInOrder => "DataSequenceInOrder",
            ErrorRecoveryLevel => "ErrorRecoveryLevel",
            TaskReporting => "TaskReporting",
            ProtocolLevel => "iSCSIProtocolLevel",
            IfMarker => "IFMarker",
            OfMarker => "OFMarker",
            IfMarkInt => "IFMarkInt",
            OfMarkInt => "OFMarkInt",
        }
    }

    /// Range and result function of numeric keys.
    pub(crate) fn numeric(self) -> Option<(u64, u64, NumFn)> {
        use OpKey::*;
        Some(match self {
            MaxConnections => (1, 65535, NumFn::Min),
            MaxBurstLength | FirstBurstLength => (512, MAX_LEN_24, NumFn::Min),
            DefaultTime2Wait => (0, 3600, NumFn::Max),
            DefaultTime2Retain => (0, 3600, NumFn::Min),
            MaxOutstandingR2T => (1, 65535, NumFn::Min),
            ErrorRecoveryLevel => (0, 2, NumFn::Min),
            ProtocolLevel => (0, 31, NumFn::Min),
            _ => return None,
        })
    }

    /// Result function of boolean keys.
    pub(crate) fn boolean(self) -> Option<BoolFn> {
        use OpKey::*;
        match self {
            InitialR2T | DataPduInOrder | DataSequenceInOrder => Some(BoolFn::Or),
            ImmediateData => Some(BoolFn::And),
            _ => None,
        }
    }

    /// Keys RFC 7143 marks irrelevant when SessionType=Discovery.
    pub(crate) fn irrelevant_for_discovery(self) -> bool {
        use OpKey::*;
        matches!(
            self,
            MaxConnections
                | InitialR2T
                | ImmediateData
                | MaxBurstLength
                | FirstBurstLength
                | MaxOutstandingR2T
                | DataPduInOrder
                | DataSequenceInOrder
        )
    }
}

/// Operational values, starting at the RFC 7143 defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpValues {
    pub header_digest: bool,
    pub data_digest: bool,
    pub max_connections: u16,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    pub mrdsl_initiator: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    pub max_outstanding_r2t: u32,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u8,
    pub protocol_level: u8,
}

impl Default for OpValues {
    fn default() -> Self {
        Self {
            header_digest: false,
            data_digest: false,
            max_connections: 1,
            initial_r2t: true,
            immediate_data: true,
            mrdsl_initiator: 8192,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
            protocol_level: 1,
        }
    }
}

impl OpValues {
    /// Stores a numeric result (already range-checked).
    pub(crate) fn set_numeric(&mut self, key: OpKey, v: u64) {
        // Every numeric range fits the field it lands in (checked by `numeric`).
        let v32 = u32::try_from(v).unwrap_or(u32::MAX);
        let v16 = u16::try_from(v).unwrap_or(u16::MAX);
        let v8 = u8::try_from(v).unwrap_or(u8::MAX);
        match key {
            OpKey::MaxConnections => self.max_connections = v16,
            OpKey::MaxBurstLength => self.max_burst_length = v32,
            OpKey::FirstBurstLength => self.first_burst_length = v32,
            OpKey::DefaultTime2Wait => self.default_time2wait = v16,
            OpKey::DefaultTime2Retain => self.default_time2retain = v16,
            OpKey::MaxOutstandingR2T => self.max_outstanding_r2t = v32,
            OpKey::ErrorRecoveryLevel => self.error_recovery_level = v8,
            OpKey::ProtocolLevel => self.protocol_level = v8,
            OpKey::MaxRecvDataSegmentLength => self.mrdsl_initiator = v32,
            _ => {}
        }
    }

    /// Stores a boolean result.
    pub(crate) fn set_bool(&mut self, key: OpKey, v: bool) {
        match key {
            OpKey::InitialR2T => self.initial_r2t = v,
            OpKey::ImmediateData => self.immediate_data = v,
            OpKey::DataPduInOrder => self.data_pdu_in_order = v,
            OpKey::DataSequenceInOrder => self.data_sequence_in_order = v,
            _ => {}
        }
    }

    /// Whether FirstBurstLength matters (RFC 7143 §13.14).
    pub(crate) fn first_burst_relevant(&self) -> bool {
        !self.initial_r2t || self.immediate_data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_all_names_round_trip() {
        use OpKey::*;
        for k in [
            HeaderDigest,
            DataDigest,
            MaxConnections,
            SendTargets,
            InitialR2T,
            ImmediateData,
            MaxRecvDataSegmentLength,
            MaxBurstLength,
            FirstBurstLength,
            DefaultTime2Wait,
            DefaultTime2Retain,
            MaxOutstandingR2T,
            DataPduInOrder,
            DataSequenceInOrder,
            ErrorRecoveryLevel,
            TaskReporting,
            ProtocolLevel,
            IfMarker,
            OfMarker,
            IfMarkInt,
            OfMarkInt,
        ] {
            assert_eq!(classify(k.name()), KeyKind::Operational(k));
        }
        assert_eq!(classify("X-com.example.foo"), KeyKind::Unknown);
        assert_eq!(classify("CHAP_R"), KeyKind::Security);
        assert_eq!(classify("TargetName"), KeyKind::Identity);
        assert_eq!(classify("TargetAlias"), KeyKind::TargetDeclared);
    }
}
