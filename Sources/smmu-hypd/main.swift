// smmu-hypd: parse the command line, then hand over to SMMUDaemon (see SMMUHypd.swift).
SMMUHypd.main()
