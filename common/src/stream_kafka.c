/* placeholder: replaced by the Kafka driver */
