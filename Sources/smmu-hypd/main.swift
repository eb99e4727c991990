print("smmu-hypd: not yet")
