import SMMUModel

extension Hypervisor {
    /// A bus master's transaction through one instance: translated by the physical SMMU under the
    /// owners' stage-2. Faults are recorded where the hardware records them and, for host streams,
    /// mirrored into the host's view; a VM's faults are consumed by the hypervisor and never seen. `.ok` is the
    /// physical address; `.invalid` is no such window, or a stream ID wider than the instance implements.
    public func dma(window w: Int, stream raw: UInt32, iova: UInt64, access: DMAAccess) -> Outcome<UInt64> {
        dma(window: w, stream: raw, iova: iova, access: access, describe: false).result
    }

    /// `dma`, and for a translated access what its initiator may cache of it (protocol v1.1's DMA_CACHED;
    /// valid while `translationEpoch` keeps its value).
    public func dma(window w: Int, stream raw: UInt32, iova: UInt64, access: DMAAccess,
                    describe: Bool) -> (result: Outcome<UInt64>, extent: TranslationExtent?) {
        guard instances.indices.contains(w) else { return (.invalid("no window \(w)"), nil) }
        let instance = instances[w]
        guard raw <= UInt32(instance.idMask) else {
            return (.invalid("stream 0x\(String(raw, radix: 16)) wider than the \(instance.window.configuration.streamIDBits)-bit stream IDs of \(instance.window.name)"), nil)
        }
        let stream = StreamID(UInt16(raw))
        let t = instance.physical.translate(stream: stream, iova: iova, access: access)
        switch t.outcome {
        case .translated(let pa):
            statistics.countDMA(owner: ownership.owner(ofStream: stream, smmu: instance.smmu), fault: nil)
            return (.ok(pa), describe ? instance.physical.extent(of: t, stream: stream) : nil)
        case .fault(let fault):
            statistics.countDMA(owner: ownership.owner(ofStream: stream, smmu: instance.smmu), fault: fault)
            deliverFault(in: instance, contextBank: t.contextBank,
                         owner: ownership.owner(ofStream: stream, smmu: instance.smmu))
            return (.fault(fault), nil)
        }
    }

    /// What the hypervisor's fault handlers do: a host bank's syndrome is copied into the host's view
    /// (the bank is the host's, identity-mapped); a global fault of a host stream is moved into the
    /// host's sGFSR (MULTI when one is pending); everything else is consumed by EL2.
    private func deliverFault(in instance: HostedInstance, contextBank: Int?, owner: Owner) {
        if let n = contextBank {
            if n < instance.hostContextBanks {
                for name: RegisterName in [.FSR, .FAR, .FSYNR0, .FSYNR1, .IPAFAR, .CBFRSYNRA] {
                    instance.virtual.poke(name, index: n, instance.physical.peek(name, index: n))
                }
            } else {
                instance.program(.FSR, index: n, instance.physical.peek(.FSR, index: n))
            }
            return
        }
        let gfsr = UInt32(truncatingIfNeeded: instance.physical.peek(.sGFSR))
        guard gfsr & FaultStatus.globalFaultBits != 0 else { return }
        if owner == .host {
            let pending = UInt32(truncatingIfNeeded: instance.virtual.peek(.sGFSR))
            if pending & FaultStatus.globalFaultBits == 0 {
                for name: RegisterName in [.sGFSR, .sGFSYNR0, .sGFSYNR1, .sGFSYNR2] {
                    instance.virtual.poke(name, instance.physical.peek(name))
                }
            } else {
                instance.virtual.poke(.sGFSR, UInt64(pending | FaultStatus.multi))
            }
        }
        instance.program(.sGFSR, UInt64(gfsr))
    }
}
