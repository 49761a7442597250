"""Knowledge distillation: losses, the trainer and the teacher-output cache."""
