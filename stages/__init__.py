"""mgmt-pipeline: DVC stages predicting MGMT promoter methylation from brain MRI."""
