"""Update rules as optax ``GradientTransformationExtraArgs`` (layer 4)."""
