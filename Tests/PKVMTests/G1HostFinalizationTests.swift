import Testing
@testable import PKVM
import SMMUModel

/// G1 when the host's own pKVM finalizes (PROT_FINALIZE, `finalization.mode: host`): a guest kernel's
/// `finalize_pkvm()` under QEMU. Once, before finalization, only where the policy grants it; every refusal audited.
@Suite struct G1HostFinalizationTests {
    /// The granted path: DEFERRED until the host finalizes, then the SMMUs are the hypervisor's and in the safe state.
    @Test func theHostsFinalizationTakesTheSMMUs() {
        let m = Machine(finalized: false, hostFinalizes: true)
        let d = m.driver()
        if case .deferred = d.read(.IDR0) {} else { Issue.record("IDR0 answered before the host finalized") }
        guard case .ok = m.hv.hostFinalize(client: m.client) else { Issue.record("PROT_FINALIZE refused"); return }
        #expect(m.hv.lifecycle == .finalized)
        #expect(d.read(.IDR0).value != nil)
        #expect(m.physical(0).peek(.sCR0) & (1 << 10) != 0, "USFCFG set: the safe state")
        #expect(m.audit.events.isEmpty)
    }

    /// pKVM answers a second __pkvm_prot_finalize with -EPERM: here DENIED, audited, and the host's state kept.
    @Test func aSecondFinalizationIsDeniedAndAudited() {
        let m = Machine(finalized: false, hostFinalizes: true)
        guard case .ok = m.hv.hostFinalize(client: m.client) else { Issue.record("PROT_FINALIZE refused"); return }
        let d = m.driver()
        d.w32(.SMR, 0, 0x1234)
        guard case .denied(let event) = m.hv.hostFinalize(client: m.client) else {
            Issue.record("a second PROT_FINALIZE was accepted"); return
        }
        #expect(event.rule == .finalizeRepeated && event.client == m.client && event.register == "PROT_FINALIZE")
        #expect(event.value == UInt64(LifecycleState.finalized.rawValue))
        #expect(m.audit.events == [event])
        #expect(m.hv.statistics.denialsByRule[.finalizeRepeated] == 1)
        #expect(d.r32(.SMR, 0) == 0x1234, "a refused finalization must not reset the host's state")
    }

    /// Where the policy does not grant it (mode delay or manual), the host cannot decide when EL2 takes the SMMUs:
    /// DENIED and audited before finalization and after, and the lifecycle does not move.
    @Test func withoutTheGrantTheHostCannotFinalize() {
        let m = Machine(finalized: false, hostFinalizes: false)
        let reset = m.state()
        guard case .denied(let before) = m.hv.hostFinalize(client: m.client) else {
            Issue.record("PROT_FINALIZE accepted without the grant"); return
        }
        #expect(before.rule == .finalizeNotHost && before.value == 0 && before.register == "PROT_FINALIZE")
        #expect(m.hv.lifecycle == .notFinalized)
        #expect(m.state() == reset, "a refused finalization changes nothing")
        #expect(m.hv.statistics.denialsByRule[.finalizeNotHost] == 1)
        #expect(m.hv.finalize())
        guard case .denied(let after) = m.hv.hostFinalize(client: m.client) else {
            Issue.record("PROT_FINALIZE accepted after finalization"); return
        }
        #expect(after.rule == .finalizeNotHost)
        #expect(m.audit.events.map(\.rule) == [.finalizeNotHost, .finalizeNotHost])
    }

    /// The operator's FINALIZE still works in host mode, and the host's then counts as a repeat; stopping refuses.
    @Test func adminFinalizationAndStopping() {
        let m = Machine(finalized: false, hostFinalizes: true)
        #expect(m.hv.finalize())
        guard case .denied(let e) = m.hv.hostFinalize(client: m.client), e.rule == .finalizeRepeated else {
            Issue.record("the host finalized after the operator"); return
        }
        let s = Machine(finalized: false, hostFinalizes: true)
        s.hv.beginStopping()
        guard case .invalid = s.hv.hostFinalize(client: s.client) else { Issue.record("finalized while stopping"); return }
        #expect(s.hv.lifecycle == .stopping && s.audit.events.isEmpty)
    }
}
