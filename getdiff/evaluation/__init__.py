"""Using a trained model: masked predictions, scores beside the baselines, calibrated
intervals, imputations and motif knock-outs."""
