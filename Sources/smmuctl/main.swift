print("smmuctl: not yet")
